"""The listener's own settings, read from ``DEEPMINER_DIMSE_*`` environment variables.

The model, the unit-label store and the explanation defaults are the service's
:class:`~service.settings.Settings` (``DEEPMINER_*``), read as well, so the
listener explains exactly as ``/explain`` does for the same environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_AE_TITLE_MAX = 16


def _check_ae_title(value: str) -> str:
    """An AE title: 1 to 16 characters of the default repertoire, no backslash or control characters."""
    title = value.strip()
    if not 1 <= len(title) <= _AE_TITLE_MAX:
        raise ValueError(f"an AE title has 1 to {_AE_TITLE_MAX} characters; got {value!r}")
    if not title.isascii() or "\\" in title or any(ord(c) < 32 for c in title):
        raise ValueError(f"an AE title holds printable ASCII without backslash; got {value!r}")
    return title


class DimseSettings(BaseSettings):
    """Everything an operator sets on the listener; each field is the env variable ``DEEPMINER_DIMSE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="DEEPMINER_DIMSE_", use_attribute_docstrings=True, frozen=True)

    ae_title: str = "DEEPMINER"
    """The listener's own AE title; associations called to another title are refused."""

    host: str = "127.0.0.1"
    """Address the Storage SCP listens on (`0.0.0.0` in a container)."""

    port: int = Field(default=11112, ge=1, le=65535)
    """TCP port of the Storage SCP (104 is DICOM's well-known port, which needs privileges)."""

    allowed_calling_ae_titles: list[str] = Field(min_length=1)
    """JSON list of the calling AE titles that may associate, e.g. `["ORTHANC", "MODALITY1"]`; every other one is
    refused at association (A-ASSOCIATE-RJ, calling AE title not recognised). Required: there is no open default."""

    spool_dir: Path = Path("spool")
    """Directory of received instances (`incoming/`), results (`outbox/`) and instances that cannot be explained
    (`failed/`); a persistent volume in production, since what it holds has been acknowledged."""

    max_spool_bytes: int = Field(default=10 * 1024**3, ge=1)
    """Largest total size of instances waiting to be explained; an instance that would exceed it is answered with
    C-STORE status A700 (out of resources), as is one the disk has no room for."""

    poll_s: float = Field(default=1.0, gt=0)
    """How often the explaining worker looks for spooled instances when it has none left."""

    retry_s: float = Field(default=30.0, gt=0)
    """Wait before the worker tries again when an explanation failed for a passing reason (the label store down)."""

    metrics_port: int = Field(default=9104, ge=0, le=65535)
    """Port of the listener's Prometheus /metrics (HTTP, on `host`); 0 turns it off."""

    destination_ae_title: str | None = None
    """AE title of the C-STORE SCP that receives the results (SR, Secondary Capture, presentation state), e.g. the
    PACS that sent the images; unset, results stay in the spool's `outbox/`."""

    destination_host: str = "127.0.0.1"
    """Host of the results' destination."""

    destination_port: int = Field(default=104, ge=1, le=65535)
    """Port of the results' destination."""

    send_retries: int = Field(default=5, ge=0, le=100)
    """Retries of an instance's results after a failed try (destination unreachable, busy, out of resources);
    then, or at once on a final status (e.g. the SOP class refused), they move to `dead-letter/`."""

    send_backoff_s: float = Field(default=2.0, ge=0)
    """Wait before the first retry of an instance's results; it doubles with each further one, up to 5 minutes."""

    send_timeout_s: float = Field(default=30.0, gt=0)
    """Longest the destination may take to associate or to answer one C-STORE."""

    max_pdu_bytes: int = Field(default=0, ge=0)
    """Largest PDU the listener receives; 0 means unlimited."""

    @field_validator("ae_title")
    @classmethod
    def _valid_own_title(cls, value: str) -> str:
        return _check_ae_title(value)

    @field_validator("destination_ae_title")
    @classmethod
    def _valid_destination_title(cls, value: str | None) -> str | None:
        return None if value is None else _check_ae_title(value)

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _valid_calling_titles(cls, value: list[str]) -> list[str]:
        return [_check_ae_title(title) for title in value]
