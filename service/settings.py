"""The service's settings, read from ``DEEPMINER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can set; each field is the env variable ``DEEPMINER_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DEEPMINER_", use_attribute_docstrings=True, frozen=True)

    bundle: Path = Path("bundles/demo")
    """Model bundle directory (written by `python -m training`); verified against its meta.json on start-up."""

    database_url: str = "sqlite:///./deepminer.db"
    """SQLAlchemy URL of the unit-label store: `sqlite:///path` or `postgresql+psycopg://user@host/db`."""

    backend: Literal["onnx", "torch"] = "onnx"
    """Inference engine: ONNX Runtime (default, no torch needed) or PyTorch (needs the `torch` extra)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` uses CUDA when the backend can, else CPU; `cuda` without a usable GPU stops start-up."""

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

    seed_automatic_labels: bool = True
    """On start-up, store the bundle's automatic unit labels (concept_labels.json) once per bundle."""

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

    @model_validator(mode="after")
    def _top_k_within_limit(self) -> Settings:
        if self.top_k > self.max_top_k:
            raise ValueError(f"top_k ({self.top_k}) must not exceed max_top_k ({self.max_top_k})")
        return self
