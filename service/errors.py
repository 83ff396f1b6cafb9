"""Domain errors of the service; ``service.api.errors`` turns them into JSON responses.

Each error carries a stable machine-readable ``code``, the HTTP ``status`` it
maps to, and the request ``field`` it concerns (``None`` when no single field
is at fault). Messages say what was received and what is accepted.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    code: ClassVar[str] = "service_error"
    status: ClassVar[int] = 500
    retry_after_s: ClassVar[int | None] = None
    """Seconds a client should wait before retrying, sent as Retry-After; None when retrying will not help."""

    def __init_subclass__(
        cls, *, code: str | None = None, status: int = 500, retry_after_s: int | None = None, **kwargs: Any
    ) -> None:
        """Each error names its code, status and Retry-After in its class line: ``class X(ServiceError, code=…)``.

        A subclass that names no code keeps its parent's three.
        """
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code, cls.status, cls.retry_after_s = code, status, retry_after_s

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the error needs: Retry-After when ``retry_after_s`` is set (subclasses add theirs)."""
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}


class EmptyUploadError(ServiceError, code="empty_upload", status=400):
    """The uploaded file has no bytes."""


class UploadTooLargeError(ServiceError, code="upload_too_large", status=413):
    """The upload exceeds ``max_upload_bytes``."""


class UnsupportedMediaTypeError(ServiceError, code="unsupported_media_type", status=415):
    """The request or the uploaded bytes are not of a supported type (PNG, TIFF, JPEG, DICOM in multipart/form-data)."""


class CorruptImageError(ServiceError, code="corrupt_image", status=422):
    """The bytes start like a supported image but cannot be decoded (truncated, corrupt, too small)."""


class NoPixelDataError(ServiceError, code="no_pixel_data", status=422):
    """A readable DICOM file that holds no image: no integer Pixel Data (a report, a structured document…)."""


class UnsupportedDicomError(ServiceError, code="unsupported_dicom", status=415):
    """A readable DICOM image of a kind not explained: transfer syntax without a decoder, multi-frame, colour model."""


class ImageTooLargeError(ServiceError, code="image_too_large", status=413):
    """The image declares more pixels than ``max_image_pixels``."""


class InvalidParameterError(ServiceError, code="invalid_parameter", status=422):
    """A request parameter is well-formed but not acceptable for the loaded model or settings."""


class UnknownUnitError(ServiceError, code="unknown_unit", status=404):
    """A unit id outside the loaded model's layer4."""


class InferenceTimeoutError(ServiceError, code="inference_timeout", status=504):
    """An explanation did not finish within ``request_timeout_s``."""


class InferenceCancelledError(ServiceError, code="inference_cancelled", status=503):
    """The caller gave up on an explanation (timeout); raised inside the worker to stop early."""


class ServiceBusyError(ServiceError, code="busy", status=503, retry_after_s=1):
    """Every worker is busy and the waiting line is full (``max_queue``)."""


class NotReadyError(ServiceError, code="not_ready", status=503, retry_after_s=5):
    """The service has not finished starting (bundle, backend, store, warm-up)."""


class BackendUnavailableError(ServiceError, code="backend_unavailable", status=503):
    """The configured backend or device cannot be used; raised at start-up."""


class PrecisionOverflowError(ServiceError, code="precision_overflow", status=503):
    """The forward pass at reduced precision (``DEEPMINER_PRECISION=fp16``) gave non-finite numbers on this image.

    Never answered as maps of NaN: the operator's setting cannot serve this image, so 503 with what to change.
    """


class AuthenticationError(ServiceError, code="unauthorized", status=401):
    """No bearer token, or one that matches no configured token (``DEEPMINER_AUTH``); sent with WWW-Authenticate."""

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message, field="authorization")
        self.invalid_token = invalid_token

    @property
    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="deepminer"' + (', error="invalid_token"' if self.invalid_token else "")
        return {**super().headers, "WWW-Authenticate": challenge}


class PermissionDeniedError(ServiceError, code="forbidden", status=403):
    """A valid token whose role is below the one the request needs (reader < annotator < admin)."""


class PreconditionFailedError(ServiceError, code="precondition_failed", status=412):
    """``If-Match`` names none of the unit's current ETags: someone labelled it since; nothing was written."""


class PreconditionRequiredError(ServiceError, code="precondition_required", status=428):
    """A label write without ``If-Match`` while ``require_if_match`` is on."""


class NotInBundleError(ServiceError, code="not_in_bundle", status=404):
    """The loaded bundle has no such file or entry (no embedding, no visualisation of that unit, an unlisted path)."""


class NoQualityReportError(ServiceError, code="no_quality_report", status=404):
    """The loaded bundle carries no explanation-quality report (``quality/quality.json``): an older bundle, or a
    build whose test split had no lesion masks."""


class PacsNotConfiguredError(ServiceError, code="pacs_not_configured", status=503):
    """A DICOMweb route was called but no PACS is configured (``dicomweb_url``)."""


class InstanceNotFoundError(ServiceError, code="instance_not_found", status=404):
    """The PACS says it holds no instance with the requested Study, Series and SOP Instance UIDs."""


class InstanceTooLargeError(ServiceError, code="instance_too_large", status=413):
    """The instance the PACS sends exceeds ``max_upload_bytes``; the transfer was cut off."""


class PacsUnavailableError(ServiceError, code="pacs_unavailable", status=502, retry_after_s=5):
    """The PACS could not be reached, failed (5xx, refused access) or answered with something that is not DICOMweb."""


class PacsTimeoutError(ServiceError, code="pacs_timeout", status=504, retry_after_s=5):
    """The PACS did not answer within ``dicomweb_timeout_s``, on every try."""


class PacsStoreError(ServiceError, code="pacs_store_failed", status=502):
    """The PACS refused to store some or all of the DICOM results (STOW-RS failure)."""
