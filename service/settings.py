"""The service's settings, read from ``DEEPMINER_*`` environment variables."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.auth import AuthMode, TokenSpec
from service.backends.names import BACKENDS


class Settings(BaseSettings):
    """Everything an operator can set; each field is the env variable ``DEEPMINER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DEEPMINER_", use_attribute_docstrings=True, frozen=True)

    bundle: Path = Path("bundles/demo")
    """Model bundle directory (written by `python -m training`); verified against its meta.json on start-up."""

    database_url: str = "sqlite:///./deepminer.db"
    """SQLAlchemy URL of the unit-label store: `sqlite:///path` or `postgresql+psycopg://user@host/db`."""

    backend: str = "onnx"
    """Inference engine, by name (`service.backends.names`): `onnx`, ONNX Runtime (default, no torch needed), or
    `torch`, PyTorch (needs the `torch` extra)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` uses CUDA when the backend can, else CPU; `cuda` without a usable GPU stops start-up."""

    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    """Arithmetic of the forward pass. `fp16` and `bf16` need `backend=torch`, which runs the network under
    autocast and returns float32 as always. `fp16` is for GPUs (slower than fp32 on CPU); `bf16` for Ampere or
    newer GPUs and CPUs with AMX or AVX-512 BF16. The ONNX backend refuses both at start-up. `int8` needs
    `backend=onnx` and a bundle with `fcn.int8.onnx` (`python -m training quantize`), best on CPUs with AVX-512
    VNNI or AMX; start-up refuses it when the bundle has none, or when its accuracy gates failed."""

    int8_allow_failed_gates: bool = False
    """Serve `precision=int8` even when the bundle's int8 graph failed its accuracy gates against fp32 (meta.json
    `int8.gates`); start-up then logs the failed gates as a warning instead of refusing."""

    intra_op_threads: int = Field(default=0, ge=0)
    """Threads one inference may use; 0 keeps the library default (all cores)."""

    top_k: int = Field(default=5, ge=1)
    """Units returned by /explain when the request gives no `top_k`."""

    max_top_k: int = Field(default=50, ge=1)
    """Largest `top_k` a request may ask for."""

    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Largest accepted upload in bytes; the transfer is cut off beyond it (413 upload_too_large)."""

    max_image_pixels: int = Field(default=80_000_000, ge=1)
    """Largest accepted image area, checked on the header before any pixel is decoded (413 image_too_large)."""

    inference_workers: int = Field(default=1, ge=1)
    """Inferences that may run at once; further requests wait in line (within `request_timeout_s`)."""

    max_queue: int = Field(default=16, ge=0)
    """Explanations that may wait for a worker; beyond that /explain answers 503 busy before reading the upload."""

    request_timeout_s: float = Field(default=120.0, gt=0)
    """Longest an explanation may wait for a worker plus run, in seconds, before a 504 inference_timeout."""

    batch_max_size: int = Field(default=1, ge=1, le=64)
    """Micro-batching for GPUs: up to this many same-shape inputs go to the backend in one call; 1 turns it off.
    Only requests running at the same time can meet, so set `inference_workers` to at least this."""

    batch_max_wait_ms: float = Field(default=10.0, ge=0, le=1000)
    """How long the first input of a micro-batch waits for others of its shape before running without them."""

    overlay_max_side: int = Field(default=512, ge=32, le=4096)
    """Longer side, in pixels, of the downscaled image the PNG overlays of `/explain?overlays=png` are drawn on."""

    holdout_images_dir: Path | None = None
    """Folder of the hold-out mammograms the bundle was built from (as laid out under its manifest's folder), for
    the top patches of units outside the ranked set, rendered on demand; unset, the folder recorded in the bundle.
    Without the images those units' patches are listed (image, box, activation) without pictures."""

    workers: int = Field(default=1, ge=1)
    """Server processes `python -m service` starts (uvicorn workers). With more than one, set
    `PROMETHEUS_MULTIPROC_DIR` to an empty directory so /metrics adds up every process's metrics."""

    seed_automatic_labels: bool = True
    """On start-up, store the bundle's automatic unit labels (concept_labels.json) once per bundle."""

    explain_automatic_labels: bool = False
    """Let automatic labels (e.g. the bundle's concept_labels.json) name units in the `explanation` of /explain,
    /dicomweb/explain and the DICOM SR, flagged `automatic`; off, only expert labels do, as in the paper."""

    environment: Literal["development", "production"] = "development"
    """Outside `development`, start-up refuses weak configuration: `auth` off, placeholder tokens."""

    auth: AuthMode = "off"
    """Who needs a bearer token: `off` (nobody; the body names the annotator), `writes` (label writes need the
    annotator role) or `all` (reads need reader as well). Health, readiness and metrics stay open."""

    tokens: list[TokenSpec] | None = None
    """JSON list of `{"name", "role", "sha256"}`: the token's sha256 (`python -m service.auth hash`), never the
    token; `name` is recorded as the annotator; `role` is reader, annotator or admin."""

    tokens_file: Path | None = None
    """A file (e.g. a mounted secret) holding the same JSON list as `tokens`; read on start-up, which fails
    if it is missing or malformed. Set one of `tokens` and `tokens_file`."""

    require_if_match: bool = False
    """Refuse label writes to `/units/{id}` without an `If-Match` header (428 precondition_required)."""

    dicomweb_url: str | None = None
    """Base URL of the PACS's DICOMweb service (WADO-RS, STOW-RS), e.g. `http://pacs:8042/dicom-web`; unset, the
    `/dicomweb` routes answer 503 pacs_not_configured."""

    dicomweb_authorization: SecretStr | None = None
    """`Authorization` header sent to the PACS, e.g. `Bearer <token>` or `Basic <base64>`; none when unset."""

    dicomweb_timeout_s: float = Field(default=30.0, gt=0)
    """Longest one DICOMweb request may take to connect, and between bytes, before it counts as timed out."""

    dicomweb_retries: int = Field(default=2, ge=0, le=10)
    """Retries after a failed DICOMweb request (no connection, timeout, 408/429/5xx); 404 and other 4xx are final."""

    dicomweb_backoff_s: float = Field(default=0.5, ge=0)
    """Wait before the first retry; it doubles with each further one (a PACS's Retry-After up to 30 s wins)."""

    dicomweb_store_results: bool = True
    """Default of `store_results` in `/dicomweb/explain`: store the SR, Secondary Capture and GSPS in the study."""

    host: str = "127.0.0.1"
    """Address `python -m service` listens on."""

    port: int = Field(default=8000, ge=0, le=65535)
    """Port `python -m service` listens on."""

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """Lowest level of the JSON log lines written to stderr."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, value: str) -> str:
        if value not in BACKENDS.names():
            raise ValueError(f"backend must be one of {', '.join(BACKENDS.names())}; got {value!r}")
        return value

    @model_validator(mode="after")
    def _top_k_within_limit(self) -> Settings:
        if self.top_k > self.max_top_k:
            raise ValueError(f"top_k ({self.top_k}) must not exceed max_top_k ({self.max_top_k})")
        return self

    @model_validator(mode="after")
    def _auth_configured(self) -> Settings:
        if self.tokens is not None and self.tokens_file is not None:
            raise ValueError("set DEEPMINER_TOKENS or DEEPMINER_TOKENS_FILE, not both")
        if self.auth != "off" and self.tokens is None and self.tokens_file is None:
            raise ValueError(f"DEEPMINER_AUTH={self.auth} needs DEEPMINER_TOKENS or DEEPMINER_TOKENS_FILE")
        if self.auth == "off" and self.environment != "development":
            raise ValueError(
                f"DEEPMINER_AUTH=off lets anyone write labels; it is refused in {self.environment}: "
                "set DEEPMINER_AUTH=writes or all with tokens"
            )
        return self


S = TypeVar("S", bound=BaseSettings)


def settings_from_environment(cls: type[S]) -> S:
    """``cls()`` read from the environment, or exit with status 2 naming each variable that is missing or wrong.

    What a process's ``main`` calls, so an operator sees ``DEEPMINER_…: why`` rather than a traceback.
    """
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [
            f"  {prefix}{str(error['loc'][0]).upper()}: {error['msg']}" if error["loc"] else f"  {error['msg']}"
            for error in exc.errors()
        ]
        print("invalid configuration:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
