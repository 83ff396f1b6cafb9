"""Image decoding and preprocessing shared by training and the service.

Training and serving must see pixels the same way, so both call these
functions: decode to a 2-D float32 grayscale image in [0, 1], resize with
Pillow's antialiased bilinear filter, replicate to 3 channels and normalise.
DICOM is recognised by its content and decoded by :mod:`deepminer.dicom`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepminer import png
from deepminer.grid import resized_shape
from deepminer.threads import MIN_SPLIT_PIXELS, helper_pool, worth_splitting

if TYPE_CHECKING:
    from deepminer.dicom import DicomInfo

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SUPPORTED_FORMATS = ("PNG", "TIFF", "JPEG", "DICOM")
DEFAULT_MAX_PIXELS = 80_000_000
"""Largest accepted image area; full-field mammograms are at most ~40 megapixels."""


class ImageDecodeError(ValueError):
    """The bytes are not an image this project can read; the message says why."""


class ImageTooLargeError(ImageDecodeError):
    """The image declares more pixels than allowed (decompression-bomb guard)."""


@dataclass(frozen=True)
class DecodedImage:
    """A grayscale image in [0, 1] plus where it came from."""

    pixels: np.ndarray  # (H, W) float32 in [0, 1]
    format: str
    bits: int
    dicom: DicomInfo | None = None  # DICOM identifiers and acquisition tags; never patient data


def _to_unit_range(img: Image.Image) -> tuple[np.ndarray, int]:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # One pass, no float32 temporary (a 13-megapixel mammogram is 50 MB of float32).
        return np.multiply(np.asarray(img, dtype=np.uint16), np.float32(1.0 / 65535.0), dtype=np.float32), 16
    if mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageDecodeError(
                f"32-bit integer images must hold 16-bit values, got range [{arr.min()}, {arr.max()}]"
            )
        return arr.astype(np.float32) / 65535.0, 16
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ImageDecodeError("floating-point image contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return scaled.astype(np.float32), 32
    if mode in ("1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "PA", "RGBX"):
        gray = img.convert("L")
        return np.asarray(gray, dtype=np.float32) / 255.0, 8
    raise ImageDecodeError(f"unsupported pixel mode {mode!r}")


def check_dimensions(width: int, height: int, *, max_pixels: int, frames: int = 1) -> None:
    """Refuse, from the header alone, images larger than ``max_pixels`` or smaller than 32x32."""
    total = width * height * frames
    if total > max_pixels:
        declared = f"{width}x{height}" + (f"x{frames} frames" if frames != 1 else "")
        raise ImageTooLargeError(f"image declares {declared} = {total} pixels, more than the limit of {max_pixels}")
    if width < 32 or height < 32:
        raise ImageDecodeError(f"image is too small to explain: {width}x{height} pixels, need at least 32x32")


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode PNG (8/16-bit), TIFF, JPEG or DICOM bytes to a grayscale image in [0, 1].

    16-bit data are divided by 65535, 8-bit by 255, colour is converted to
    luminance; DICOM goes through :func:`deepminer.dicom.decode_dicom` (its
    LUTs, windowing and photometric interpretation). Raises
    :class:`ImageDecodeError` for empty, unknown, unsupported or corrupt data,
    and :class:`ImageTooLargeError` before decoding pixels when the header
    declares more than ``max_pixels`` pixels.
    """
    if not data:
        raise ImageDecodeError("the upload is empty")
    from deepminer import dicom  # pydicom is imported on first use, not with this module

    if dicom.looks_like_dicom(data):
        return dicom.decode_dicom(data, max_pixels=max_pixels)
    return decode_raster(data, max_pixels=max_pixels)


def decode_raster(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """PNG (8/16-bit), TIFF or JPEG bytes, known not to be DICOM, to a grayscale image in [0, 1].

    :func:`decode_image` once the bytes have been told apart from DICOM (the service sniffs them once).
    """
    fast = png.decode_grayscale(data, lambda width, height: check_dimensions(width, height, max_pixels=max_pixels))
    if fast is not None:  # grayscale PNG, the same pixels as Pillow's (deepminer/png.py), in half the time
        return DecodedImage(pixels=fast[0], format="PNG", bits=fast[1])
    return decode_with_pillow(data, max_pixels=max_pixels)


def decode_with_pillow(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """PNG, TIFF or JPEG bytes decoded by Pillow (:func:`decode_raster` without the PNG fast path)."""
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image (expected PNG, TIFF, JPEG or DICOM)") from None
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"unreadable image header: {exc}") from None
    if img.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"unsupported image format {img.format!r}; expected one of {', '.join(SUPPORTED_FORMATS)}")
    width, height = img.size
    check_dimensions(width, height, max_pixels=max_pixels)
    try:
        img.load()
        pixels, bits = _to_unit_range(img)
    except ImageDecodeError:
        raise
    except Exception as exc:  # Pillow raises many types for truncated or corrupt data.
        raise ImageDecodeError(f"corrupt or truncated {img.format} image: {exc}") from None
    return DecodedImage(pixels=pixels, format=str(img.format), bits=bits)


def read_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to a grayscale float32 array in [0, 1] (see :func:`decode_image`)."""
    return decode_image(Path(path).read_bytes(), max_pixels=max_pixels).pixels


def read_image_shape(path: Path) -> tuple[int, int]:
    """``(rows, columns)`` of an image file (PNG, TIFF, JPEG or DICOM) from its header, no pixels decoded."""
    from deepminer import dicom

    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(132)
    if dicom.looks_like_dicom(head):
        info = dicom.read_dicom_info(path)
        if info.rows is None or info.columns is None:
            raise ImageDecodeError(f"{path}: DICOM header without Rows/Columns")
        return info.rows, info.columns
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: unreadable image header: {exc}") from None
    return height, width


RESIZE_STRIPS = 4
"""Most strips one resize is split into, to run on several cores (Pillow releases the GIL as it resamples)."""


def _strip_edges(size_in: int, size_out: int) -> list[int]:
    """Output positions that split ``size_out`` into at most :data:`RESIZE_STRIPS` strips, each starting on a
    whole source pixel (a multiple of ``size_out / gcd``), so Pillow's float32 ``box`` holds it exactly."""
    whole = math.gcd(size_in, size_out)
    count = min(RESIZE_STRIPS, whole)
    return [round(i * whole / count) * (size_out // whole) for i in range(count + 1)]


def resize(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float image to ``shape`` (rows, columns), antialiased bilinear (Pillow's).

    A large output is made in strips, along whichever axis splits on whole source pixels into more
    of them, each strip from the band of the image its filter reads (Pillow's ``box``), on the helper
    threads. Every output pixel has the same filter weights as in one resize, up to the last bits of
    their double-precision arithmetic: the result equals one resize within two float32 ulps (3328 x 2560
    to 1180 x 908: 0.003 % of pixels differ, by one). The strips depend on the sizes alone, never on
    the threads. That resize takes 55 ms in one piece, 25 ms in strips on 2 cores (BENCHMARKS.md).
    """
    height, width = shape
    pixels = pixels.astype(np.float32, copy=False)
    if pixels.shape == (height, width):
        return pixels
    rows, cols = pixels.shape
    if height * width < MIN_SPLIT_PIXELS:  # one Pillow call: threads would cost more than they save
        axis, edges = 0, [0, height]
    else:
        by_rows, by_cols = _strip_edges(rows, height), _strip_edges(cols, width)
        axis, edges = (0, by_rows) if len(by_rows) >= len(by_cols) else (1, by_cols)
    size_in, size_out = pixels.shape[axis], shape[axis]
    margin = math.ceil(max(size_in / size_out, 1.0)) + 2  # the filter reaches max(scale, 1) pixels either side

    def strip(i: int) -> np.ndarray:
        start, stop = edges[i], edges[i + 1]
        source_start, source_stop = start * size_in // size_out, stop * size_in // size_out  # exact: see edges
        first, last = max(source_start - margin, 0), min(source_stop + margin, size_in)
        if axis == 0:
            band = pixels[first:last]
            box = (0, source_start - first, cols, source_stop - first)
            size = (width, stop - start)
        else:
            band = np.ascontiguousarray(pixels[:, first:last])
            box = (source_start - first, 0, source_stop - first, rows)
            size = (stop - start, height)
        resized = Image.fromarray(band, mode="F").resize(size, Image.Resampling.BILINEAR, box=box)
        return np.asarray(resized, dtype=np.float32)

    if len(edges) == 2:
        return strip(0)
    strips = range(len(edges) - 1)
    parts = helper_pool().map(strip, strips) if worth_splitting(height * width) else map(strip, strips)
    return np.concatenate(list(parts), axis=axis)


def normalise(pixels: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """Replicate grayscale in [0, 1] to 3 channels and normalise: ``(g - mean_c) / std_c``.

    ``(H, W)`` gives ``(3, H, W)``; a batch ``(N, H, W)`` gives ``(N, 3, H, W)``.
    """
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    return (pixels[..., None, :, :].astype(np.float32, copy=False) - m) / s


def network_input(
    pixels: np.ndarray,
    *,
    short_side: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Whole-mammogram network input: short side scaled to ``short_side``, normalised; ``(1, 3, H', W')``."""
    shape = resized_shape(pixels.shape[0], pixels.shape[1], short_side)
    return normalise(resize(pixels, shape), mean, std)[None]
