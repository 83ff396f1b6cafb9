"""Fast decoding of grayscale PNG, the usual way mammograms travel outside DICOM.

Pillow spends about 0.3 s on a 16-bit 3328 x 2560 mammogram PNG: inflate,
row unfiltering, a byte swap, then a copy out of its own image memory before
the pixels are scaled to floats. Here the IDAT stream is inflated with ISA-L
and one compiled loop (numba) unfilters each row and writes it out already
scaled to [0, 1], on a helper thread behind the inflate: about 0.1 s on 2
cores (BENCHMARKS.md §3).

Only non-interlaced 8- and 16-bit grayscale PNGs take this path, and the
result is bit for bit what :func:`deepminer.imaging.decode_image` gets from
Pillow (tests/deepminer/test_png.py checks every filter type against Pillow).
Anything else, and any file this parser finds malformed, returns None, so
that Pillow decodes it or reports what is wrong in its own words.
"""

from __future__ import annotations

import logging
import struct
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
from isal import isal_zlib

from deepminer.threads import helper_pool, worth_splitting

log = logging.getLogger(__name__)

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GRAYSCALE = 0  # PNG colour type 0: one sample per pixel
_FAST_DEPTHS = (8, 16)
_ROWS_PER_STEP = 256  # rows handed to the helper thread at a time


class _Unsupported(Exception):
    """The file is not one this module decodes (or it is malformed); Pillow takes over."""


def _compile(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` compiled by numba, releasing the GIL; cached on disk where the install can be written to."""
    import numba

    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # no writable cache directory (a read-only install without HOME): compile on first use
        return numba.njit(nogil=True)(function)


def _unfilter_rows(raw: np.ndarray, out: np.ndarray, bits: int, first: int, stop: int, previous: np.ndarray) -> int:
    """Undo the PNG filters of rows ``first`` to ``stop`` of ``raw`` into ``out`` ``(h, w)`` float32, in [0, 1].

    ``raw`` holds ``h`` rows of one filter-type byte then ``w * bits / 8`` bytes;
    ``previous`` holds the reconstructed row above ``first`` (zeros above the
    first row) and, on return, row ``stop - 1``, so that the rows can be done in
    consecutive calls as they are inflated. 16-bit samples are big-endian and
    scaled as ``value * float32(1 / 65535)``, 8-bit ones as ``value / float32(255)``:
    the float32 operations :func:`deepminer.imaging.decode_image` applies to Pillow's pixels.
    Returns -1, or the index of the first row with an unknown filter type.
    """
    width = out.shape[1]
    bpp = bits // 8
    row_bytes = width * bpp
    above = previous.copy()
    current = np.zeros(row_bytes, np.uint8)
    scale16 = np.float32(1.0 / 65535.0)
    scale8 = np.float32(255.0)
    for y in range(first, stop):
        start = y * (row_bytes + 1)
        kind = raw[start]
        line = raw[start + 1 : start + 1 + row_bytes]
        if kind == 0:  # None
            current[:] = line
        elif kind == 1:  # Sub: the byte one pixel to the left
            for x in range(bpp):
                current[x] = line[x]
            for x in range(bpp, row_bytes):
                current[x] = (line[x] + current[x - bpp]) & 0xFF
        elif kind == 2:  # Up: the byte above
            for x in range(row_bytes):
                current[x] = (line[x] + above[x]) & 0xFF
        elif kind == 3:  # Average of left and above, rounded down
            for x in range(bpp):
                current[x] = (line[x] + (above[x] >> 1)) & 0xFF
            for x in range(bpp, row_bytes):
                current[x] = (line[x] + ((np.int32(current[x - bpp]) + np.int32(above[x])) >> 1)) & 0xFF
        elif kind == 4:  # Paeth: left, above or upper-left, whichever is nearest to left + above - upper-left
            for x in range(bpp):
                current[x] = (line[x] + above[x]) & 0xFF  # left and upper-left are zero: the predictor is above
            for x in range(bpp, row_bytes):
                a = np.int32(current[x - bpp])
                b = np.int32(above[x])
                c = np.int32(above[x - bpp])
                pa = abs(b - c)
                pb = abs(a - c)
                pc = abs(a + b - 2 * c)
                if pa <= pb and pa <= pc:
                    predictor = a
                elif pb <= pc:
                    predictor = b
                else:
                    predictor = c
                current[x] = (line[x] + predictor) & 0xFF
        else:
            return y
        if bpp == 2:
            for x in range(width):
                value = (np.int32(current[2 * x]) << 8) | np.int32(current[2 * x + 1])
                out[y, x] = np.float32(value) * scale16
        else:
            for x in range(width):
                out[y, x] = np.float32(current[x]) / scale8
        above, current = current, above
    previous[:] = above
    return -1


_ready: Callable[..., int] | None = None
_failed = False  # numba could not build the loop here: Pillow decodes every PNG
_build_lock = threading.Lock()
_background: threading.Thread | None = None


def _build() -> Callable[..., int] | None:
    """:func:`_unfilter_rows` compiled (or loaded from numba's cache) and run once, in one thread at a time.

    None, once and for all, where numba cannot build it (logged): decoding then stays with Pillow.
    """
    global _ready, _failed
    with _build_lock:
        if _ready is None and not _failed:
            try:
                compiled = _compile(_unfilter_rows)
                raw = np.zeros(2 * (1 + 2), dtype=np.uint8)  # two rows of two bytes, filter type None
                for bits in _FAST_DEPTHS:  # numba compiles on the first call, for these argument types
                    compiled(raw, np.empty((2, 16 // bits), np.float32), bits, 0, 2, np.zeros(2, np.uint8))
            except Exception:  # numba or LLVM missing or broken on this platform; never fail a decode for it
                _failed = True
                log.warning("the fast PNG decoder could not be compiled; Pillow decodes PNGs", exc_info=True)
            else:
                _ready = compiled
        return _ready


def _unfilter() -> Callable[..., int] | None:
    """The compiled loop; None while :func:`compile_decoder` builds it in the background, or if it cannot be built."""
    if _ready is not None or _failed:
        return _ready
    if _background is not None and _background.is_alive():
        return None
    return _build()


def _chunks(data: bytes) -> tuple[bytes, list[memoryview]]:
    """The IHDR payload and the consecutive IDAT payloads, CRC-checked except IDAT (zlib's Adler-32 covers it)."""
    view = memoryview(data)
    position = len(SIGNATURE)
    header = b""
    idat: list[memoryview] = []
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 8 + length
        if end + 4 > len(data):
            raise _Unsupported("chunk runs past the end of the file")
        if kind == b"IDAT":
            idat.append(view[position + 8 : end])
        elif idat:
            break  # the image data ended; Pillow reads no further either
        else:
            (crc,) = struct.unpack_from(">I", data, end)
            if zlib.crc32(view[position + 4 : end]) != crc:
                raise _Unsupported(f"bad CRC in {kind!r}")
            if kind == b"IHDR":
                header = bytes(view[position + 8 : end])
        position = end + 4
    if len(header) != 13 or not idat:
        raise _Unsupported("no IHDR or no IDAT")
    return header, idat


def _decode_rows(
    idat: list[memoryview], width: int, height: int, bits: int, unfilter: Callable[..., int]
) -> np.ndarray:
    """Inflate the IDAT stream and unfilter its rows into float32 pixels, or :class:`_Unsupported`.

    For a large image the rows inflated so far are unfiltered on a helper
    thread while the main one inflates the next chunk (ISA-L and the compiled
    loop both release the GIL). The stream must inflate to exactly the
    declared rows and end with a valid Adler-32.
    """
    stride = 1 + width * bits // 8
    expected = height * stride
    raw = np.empty(expected, dtype=np.uint8)
    pixels = np.empty((height, width), dtype=np.float32)
    above = np.zeros(stride - 1, dtype=np.uint8)
    pool = helper_pool() if worth_splitting(height * width) else None
    pending: Future[int] | None = None
    stream = isal_zlib.decompressobj()
    produced = done = 0

    def finish(job: Future[int] | None) -> None:
        if job is not None and job.result() != -1:
            raise _Unsupported("unknown filter type")

    try:
        for chunk in idat:
            piece = stream.decompress(chunk, expected + 1 - produced)
            if produced + len(piece) > expected:
                raise _Unsupported("more pixel data than the header declares")
            raw[produced : produced + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            produced += len(piece)
            rows = produced // stride
            if pool is not None and rows - done >= _ROWS_PER_STEP:
                finish(pending)  # one step at a time: each continues from the row the last one ended on
                pending = pool.submit(unfilter, raw, pixels, bits, done, rows, above)
                done = rows
    except isal_zlib.error as exc:
        raise _Unsupported(str(exc)) from None
    finally:
        finish(pending)
    if produced != expected or not stream.eof:
        raise _Unsupported("truncated pixel data")
    if unfilter(raw, pixels, bits, done, height, above) != -1:
        raise _Unsupported("unknown filter type")
    return pixels


def decode_grayscale(data: bytes, check_size: Callable[[int, int], None]) -> tuple[np.ndarray, int] | None:
    """``(pixels (H, W) float32 in [0, 1], bits)`` of a non-interlaced 8/16-bit grayscale PNG, else None.

    ``check_size(width, height)`` runs on the header, before any pixel is
    inflated, and may raise to refuse the image. None means: not a PNG this
    path decodes, or a malformed one; decode it with Pillow.
    """
    if not data.startswith(SIGNATURE) or (unfilter := _unfilter()) is None:
        return None
    try:
        header, idat = _chunks(data)
        width, height, bits, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", header)
        if colour != _GRAYSCALE or bits not in _FAST_DEPTHS or (compression, filtering, interlace) != (0, 0, 0):
            return None
        if width == 0 or height == 0:
            return None
        check_size(width, height)
        return _decode_rows(idat, width, height, bits, unfilter), bits
    except (_Unsupported, struct.error):
        return None


def compile_decoder(*, background: bool = False) -> None:
    """Compile (or load from numba's cache) the unfiltering loop now rather than on the first PNG.

    With ``background``, a thread does it and this returns at once: until it is done, grayscale PNGs
    are decoded by Pillow, with the same result (the service starts this way, so a compile without
    a cache, several seconds, does not hold up readiness).
    """
    global _background
    if not background:
        _build()
    elif _ready is None and (_background is None or not _background.is_alive()):
        _background = threading.Thread(target=_build, name="deepminer-png-compile", daemon=True)
        _background.start()
