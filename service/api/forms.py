"""The OpenAPI description of the multipart forms the explanation routes read.

The form is parsed by :mod:`service.api.upload` (to cap its size while it
streams in), so FastAPI cannot infer the request body; each route describes it
with :func:`upload_body`.
"""

from __future__ import annotations

from typing import Any, Final

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
