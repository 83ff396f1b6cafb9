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
