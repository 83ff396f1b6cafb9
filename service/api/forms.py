"""The OpenAPI description of the explanation routes: the multipart forms they read, the errors they answer.

The form is parsed by :mod:`service.api.upload` (to cap its size while it
streams in), so FastAPI cannot infer the request body; each route describes it
with :func:`upload_body`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from service.schemas import ErrorResponse

IMAGE_FIELD: Final = "file"
IMAGE_DESCRIPTION: Final = "A mammogram as PNG (8 or 16 bit), TIFF, JPEG or DICOM."


def upload_body(*, image_description: str = IMAGE_DESCRIPTION, **fields: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a required multipart body: the image as ``file``, then ``fields`` (name → schema)."""
    image = {"type": "string", "format": "binary", "description": image_description}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [IMAGE_FIELD],
                        "properties": {IMAGE_FIELD: image, **fields},
                    }
                }
            },
        }
    }


UPLOAD_ERRORS: Final = {
    400: "`empty_upload`",
    413: "`upload_too_large` or `image_too_large`",
    503: "`not_ready`, or `busy` when the waiting line is full",
    504: "`inference_timeout`",
}
"""What every route that reads an upload may answer, and how; routes add or reword theirs."""


def error_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses`` for a route: each status with the error body and its description (the codes it may carry)."""
    return {status: {"model": ErrorResponse, "description": text} for status, text in sorted(descriptions.items())}
