"""The uploaded bytes as a grayscale image, or the domain error that names the problem.

Decoding itself is :mod:`deepminer.imaging`'s and :mod:`deepminer.dicom`'s, the same as in
training: images are used as stored, never flipped by laterality or view.
This module only sniffs the type from the bytes (clients routinely send
``application/octet-stream``) and sorts decoding failures into error codes.
"""

from __future__ import annotations

from deepminer import dicom, imaging
from service.errors import (
    CorruptImageError,
    EmptyUploadError,
    ImageTooLargeError,
    NoPixelDataError,
    ServiceError,
    UnsupportedDicomError,
    UnsupportedMediaTypeError,
)

FIELD = "file"

# Leading bytes of the raster formats deepminer.imaging decodes; DICOM has its own test.
_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"II+\x00",  # BigTIFF
    b"MM\x00+",
)

# deepminer.dicom raises one ImageDecodeError type; its messages start with
# these words (tests/service/test_api_dicom.py pins each case), which tell a
# well-formed DICOM that is not an image, or not one we explain, from a broken file.
_DICOM_PROBLEMS: tuple[tuple[str, type[ServiceError]], ...] = (
    ("DICOM file has no Pixel Data", NoPixelDataError),
    ("DICOM file has float pixel data", NoPixelDataError),
    ("unsupported DICOM transfer syntax", UnsupportedDicomError),
    ("multi-frame DICOM", UnsupportedDicomError),
    ("unsupported DICOM photometric interpretation", UnsupportedDicomError),
)


def sniff_format(data: bytes) -> str | None:
    """``"DICOM"``, ``"raster"`` (PNG, TIFF, JPEG, or a prefix of one) or None, from the bytes alone."""
    if dicom.looks_like_dicom(data):
        return "DICOM"
    if any(data.startswith(sig) or sig.startswith(data) for sig in _SIGNATURES):
        return "raster"
    return None


def decode_upload(data: bytes, *, max_pixels: int) -> imaging.DecodedImage:
    """Decode an upload; every failure is a 4xx :class:`~service.errors.ServiceError` naming ``file``.

    The pixel limit is checked on the header (PNG/TIFF/JPEG size, DICOM
    Rows × Columns × frames) before any pixel is decoded. The bytes are sniffed
    once, here, and go straight to their decoder (:func:`deepminer.dicom.decode_dicom`
    or :func:`deepminer.imaging.decode_raster`).
    """
    if not data:
        raise EmptyUploadError("the uploaded file is empty", field=FIELD)
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedMediaTypeError(
            f"the upload is not a PNG, TIFF, JPEG or DICOM image (it starts with {data[:8]!r})", field=FIELD
        )
    try:
        if kind == "DICOM":
            return dicom.decode_dicom(data, max_pixels=max_pixels)
        return imaging.decode_raster(data, max_pixels=max_pixels)
    except imaging.ImageTooLargeError as exc:
        raise ImageTooLargeError(str(exc), field=FIELD) from None
    except imaging.ImageDecodeError as exc:
        message = str(exc)
        if kind == "DICOM":
            for prefix, error in _DICOM_PROBLEMS:
                if message.startswith(prefix):
                    if error is NoPixelDataError:
                        error, message = _without_pixels(data, message)
                    raise error(message, field=FIELD) from None
        raise CorruptImageError(message, field=FIELD) from None


def _without_pixels(data: bytes, message: str) -> tuple[type[ServiceError], str]:
    """A DICOM without Pixel Data: an object that holds no image (a report…), or a cut-off image or file.

    Told apart by the SOP class the header declares: an image storage class
    without pixels, or no class at all, means the file was cut off.
    """
    try:
        sop_class = dicom.read_dicom_info(data).sop_class_name
    except imaging.ImageDecodeError:
        sop_class = None
    if sop_class is None:
        return CorruptImageError, "truncated or corrupt DICOM file: no SOP class and no Pixel Data (7FE0,0010)"
    if "Image" in sop_class:
        return CorruptImageError, f"truncated DICOM file: a {sop_class} object that ends before its Pixel Data (7FE0,0010)"
    return NoPixelDataError, message
