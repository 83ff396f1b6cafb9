"""Bad uploads and parameters get the right 4xx JSON error, and the service keeps serving."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image


def upload(data: bytes, name: str = "mammogram.png", content_type: str = "image/png") -> dict[str, Any]:
    return {"file": (name, data, content_type)}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A small PNG (16-bit grayscale) that declares ``width`` x ``height`` but holds almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 256)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def assert_error(response: Any, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def assert_still_serving(client: TestClient, phantom_png: bytes) -> None:
    response = client.post("/explain", files=upload(phantom_png))
    assert response.status_code == 200, response.text
    assert client.get("/readyz").status_code == 200


BAD_UPLOADS: dict[str, tuple[Callable[[bytes], bytes], int, str]] = {
    "text, not an image": (lambda _: b"patient name: nobody\n" * 10, 415, "unsupported_media_type"),
    "GIF, an unsupported format": (
        lambda _: encoded(np.zeros((64, 64), np.uint8), "GIF"),
        415,
        "unsupported_media_type",
    ),
    "empty": (lambda _: b"", 400, "empty_upload"),
    "PNG signature, corrupt header": (lambda _: b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 40, 422, "corrupt_image"),
    "truncated PNG": (lambda png: png[: len(png) // 2], 422, "corrupt_image"),
    "PNG cut inside its signature": (lambda png: png[:5], 422, "corrupt_image"),
    "truncated DICOM": (lambda _: b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00", 422, "corrupt_image"),
    "too small to explain": (lambda _: encoded(np.zeros((16, 16), np.uint8), "PNG"), 422, "corrupt_image"),
    "huge declared dimensions": (lambda _: png_header(100_000, 100_000), 413, "image_too_large"),
    "declared above the pixel limit": (lambda _: png_header(10_000, 8_001), 413, "image_too_large"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_is_rejected_and_service_survives(client: TestClient, phantom_png: bytes, case: str) -> None:
    make, status, code = BAD_UPLOADS[case]
    response = client.post("/explain", files=upload(make(phantom_png)))
    assert_error(response, status, code, "file")
    assert_still_serving(client, phantom_png)


def test_upload_over_the_byte_limit(make_client: Callable[..., Any], phantom_png: bytes) -> None:
    limit = 4096
    assert len(phantom_png) > limit
    with make_client(max_upload_bytes=limit) as client:
        assert_error(client.post("/explain", files=upload(phantom_png)), 413, "upload_too_large", "file")

        # Without a Content-Length the body is counted as it streams in.
        boundary = "deepminer-test-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()

        def chunks() -> Iterator[bytes]:
            yield head
            for _ in range(64):
                yield b"\x89" * 4096
            yield f"\r\n--{boundary}--\r\n".encode()

        response = client.post(
            "/explain", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
        )
        assert_error(response, 413, "upload_too_large", "file")

        small = encoded(np.full((64, 48), 128, np.uint8), "PNG")
        assert len(small) < limit
        assert client.post("/explain", files=upload(small)).status_code == 200


def test_image_over_the_pixel_limit(make_client: Callable[..., Any], phantom_png: bytes) -> None:
    with make_client(max_image_pixels=100 * 100) as client:
        assert_error(client.post("/explain", files=upload(phantom_png)), 413, "image_too_large", "file")
        small = encoded(np.full((64, 48), 128, np.uint8), "PNG")
        assert client.post("/explain", files=upload(small)).status_code == 200
        # Every format Pillow decodes is held to the same limit, not only the grayscale PNGs of the fast path.
        for fmt, channels in (("TIFF", ()), ("JPEG", ()), ("PNG", (3,))):
            over, at = (encoded(np.full((rows, 100, *channels), 128, np.uint8), fmt) for rows in (101, 100))
            assert_error(client.post("/explain", files=upload(over)), 413, "image_too_large", "file")
            assert client.post("/explain", files=upload(at)).status_code == 200, fmt


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"top_k": 0}, "validation_error", "top_k"),
        ({"top_k": "many"}, "validation_error", "top_k"),
        ({"top_k": 51}, "invalid_parameter", "top_k"),
        ({"class_name": "cancer"}, "invalid_parameter", "class_name"),
        ({"class_name": "Malignant"}, "invalid_parameter", "class_name"),
    ],
)
def test_bad_parameters_name_the_field(
    client: TestClient, phantom_png: bytes, params: dict[str, Any], code: str, field: str
) -> None:
    assert_error(client.post("/explain", files=upload(phantom_png), params=params), 422, code, field)
    assert_still_serving(client, phantom_png)


def test_request_that_is_not_a_multipart_upload(client: TestClient, phantom_png: bytes) -> None:
    assert_error(
        client.post("/explain", content=phantom_png, headers={"Content-Type": "image/png"}),
        415,
        "unsupported_media_type",
        "file",
    )
    assert_error(
        client.post("/explain", files={"image": ("m.png", phantom_png, "image/png")}), 422, "invalid_parameter", "file"
    )
    assert_error(
        client.post("/explain", data={"file": "not a file"}, files={"other": ("x", b"x")}),
        422,
        "invalid_parameter",
        "file",
    )
    assert_still_serving(client, phantom_png)


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert_error(client.get("/no-such-thing"), 404, "not_found", None)
    assert_error(client.get("/explain"), 405, "method_not_allowed", None)
