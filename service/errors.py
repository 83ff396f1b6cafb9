"""Domain errors of the service; ``service.api.errors`` turns them into JSON responses.

Each error carries a stable machine-readable ``code``, the HTTP ``status`` it
maps to, and the request ``field`` it concerns (``None`` when no single field
is at fault). Messages say what was received and what is accepted.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    code: ClassVar[str] = "service_error"
    status: ClassVar[int] = 500
    retry_after_s: ClassVar[int | None] = None
    """Seconds a client should wait before retrying, sent as Retry-After; None when retrying will not help."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the error needs: Retry-After when ``retry_after_s`` is set (subclasses add theirs)."""
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}


class EmptyUploadError(ServiceError):
    """The uploaded file has no bytes."""

    code = "empty_upload"
    status = 400


class UploadTooLargeError(ServiceError):
    """The upload exceeds ``max_upload_bytes``."""

    code = "upload_too_large"
    status = 413


class UnsupportedMediaTypeError(ServiceError):
    """The request or the uploaded bytes are not of a supported type (PNG, TIFF, JPEG, DICOM in multipart/form-data)."""

    code = "unsupported_media_type"
    status = 415


class CorruptImageError(ServiceError):
    """The bytes start like a supported image but cannot be decoded (truncated, corrupt, too small)."""

    code = "corrupt_image"
    status = 422


class NoPixelDataError(ServiceError):
    """A readable DICOM file that holds no image: no integer Pixel Data (a report, a structured document…)."""

    code = "no_pixel_data"
    status = 422


class UnsupportedDicomError(ServiceError):
    """A readable DICOM image of a kind not explained: transfer syntax without a decoder, multi-frame, colour model."""

    code = "unsupported_dicom"
    status = 415


class ImageTooLargeError(ServiceError):
    """The image declares more pixels than ``max_image_pixels``."""

    code = "image_too_large"
    status = 413


class InvalidParameterError(ServiceError):
    """A request parameter is well-formed but not acceptable for the loaded model or settings."""

    code = "invalid_parameter"
    status = 422


class UnknownUnitError(ServiceError):
    """A unit id outside the loaded model's layer4."""

    code = "unknown_unit"
    status = 404


class InferenceTimeoutError(ServiceError):
    """An explanation did not finish within ``request_timeout_s``."""

    code = "inference_timeout"
    status = 504


class InferenceCancelledError(ServiceError):
    """The caller gave up on an explanation (timeout); raised inside the worker to stop early."""

    code = "inference_cancelled"
    status = 503


class ServiceBusyError(ServiceError):
    """Every worker is busy and the waiting line is full (``max_queue``)."""

    code = "busy"
    status = 503
    retry_after_s: ClassVar[int | None] = 1


class NotReadyError(ServiceError):
    """The service has not finished starting (bundle, backend, store, warm-up)."""

    code = "not_ready"
    status = 503
    retry_after_s = 5


class BackendUnavailableError(ServiceError):
    """The configured backend or device cannot be used; raised at start-up."""

    code = "backend_unavailable"
    status = 503


class PrecisionOverflowError(ServiceError):
    """The forward pass at reduced precision (``DEEPMINER_PRECISION=fp16``) gave non-finite numbers on this image.

    Never answered as maps of NaN: the operator's setting cannot serve this image, so 503 with what to change.
    """

    code = "precision_overflow"
    status = 503


class AuthenticationError(ServiceError):
    """No bearer token, or one that matches no configured token (``DEEPMINER_AUTH``); sent with WWW-Authenticate."""

    code = "unauthorized"
    status = 401

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message, field="authorization")
        self.invalid_token = invalid_token

    @property
    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="deepminer"' + (', error="invalid_token"' if self.invalid_token else "")
        return {**super().headers, "WWW-Authenticate": challenge}


class PermissionDeniedError(ServiceError):
    """A valid token whose role is below the one the request needs (reader < annotator < admin)."""

    code = "forbidden"
    status = 403


class PreconditionFailedError(ServiceError):
    """``If-Match`` names none of the unit's current ETags: someone labelled it since; nothing was written."""

    code = "precondition_failed"
    status = 412


class PreconditionRequiredError(ServiceError):
    """A label write without ``If-Match`` while ``require_if_match`` is on."""

    code = "precondition_required"
    status = 428


class NotInBundleError(ServiceError):
    """The loaded bundle has no such file or entry (no embedding, no visualisation of that unit, an unlisted path)."""

    code = "not_in_bundle"
    status = 404


class NoQualityReportError(ServiceError):
    """The loaded bundle carries no explanation-quality report (``quality/quality.json``): an older bundle, or a
    build whose test split had no lesion masks."""

    code = "no_quality_report"
    status = 404


class PacsNotConfiguredError(ServiceError):
    """A DICOMweb route was called but no PACS is configured (``dicomweb_url``)."""

    code = "pacs_not_configured"
    status = 503


class InstanceNotFoundError(ServiceError):
    """The PACS says it holds no instance with the requested Study, Series and SOP Instance UIDs."""

    code = "instance_not_found"
    status = 404


class InstanceTooLargeError(ServiceError):
    """The instance the PACS sends exceeds ``max_upload_bytes``; the transfer was cut off."""

    code = "instance_too_large"
    status = 413


class PacsUnavailableError(ServiceError):
    """The PACS could not be reached, failed (5xx, refused access) or answered with something that is not DICOMweb."""

    code = "pacs_unavailable"
    status = 502
    retry_after_s = 5


class PacsTimeoutError(ServiceError):
    """The PACS did not answer within ``dicomweb_timeout_s``, on every try."""

    code = "pacs_timeout"
    status = 504
    retry_after_s = 5


class PacsStoreError(ServiceError):
    """The PACS refused to store some or all of the DICOM results (STOW-RS failure)."""

    code = "pacs_store_failed"
    status = 502
