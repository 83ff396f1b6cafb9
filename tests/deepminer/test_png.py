"""The grayscale PNG fast path gives Pillow's pixels exactly, and leaves every other PNG to Pillow."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from deepminer import png
from deepminer.imaging import ImageDecodeError, ImageTooLargeError, _to_unit_range, decode_image


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _filtered(rows: np.ndarray, bpp: int, filters: list[int]) -> bytes:
    """PNG-filter the raw byte rows ``(h, row_bytes)`` with the given filter type per row (the encoder's side)."""
    out = []
    previous = np.zeros(rows.shape[1], dtype=np.int32)
    for row, kind in zip(rows.astype(np.int32), filters):
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.int32), previous[:-bpp]])
        if kind == 0 or kind > 4:  # > 4: an invalid type, written for decoders to refuse
            predictor = np.zeros_like(row)
        elif kind == 1:
            predictor = left
        elif kind == 2:
            predictor = previous
        elif kind == 3:
            predictor = (left + previous) // 2
        else:
            p = left + previous - upper_left
            pa, pb, pc = np.abs(p - left), np.abs(p - previous), np.abs(p - upper_left)
            predictor = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, previous, upper_left))
        out.append(bytes([kind]) + ((row - predictor) % 256).astype(np.uint8).tobytes())
        previous = row
    return b"".join(out)


def encode_png(
    samples: np.ndarray,
    filters: list[int],
    *,
    idat_size: int = 1 << 20,
    colour: int = 0,
    interlace: int = 0,
    before_idat: bytes = b"",
) -> bytes:
    """A grayscale PNG of ``samples`` (uint8 or uint16) with the filter type of each row chosen by the caller."""
    bits = 16 if samples.dtype == np.uint16 else 8
    height, width = samples.shape
    rows = samples.astype(">u2" if bits == 16 else np.uint8).view(np.uint8).reshape(height, -1)
    stream = zlib.compress(_filtered(rows, bits // 8, filters), 6)
    header = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, interlace)
    idats = [stream[i : i + idat_size] for i in range(0, len(stream), idat_size)]
    return (
        png.SIGNATURE
        + _chunk(b"IHDR", header)
        + before_idat
        + b"".join(_chunk(b"IDAT", part) for part in idats)
        + _chunk(b"IEND", b"")
    )


def pillow_pixels(data: bytes) -> np.ndarray:
    """What decode_image returned before the fast path: Pillow's pixels, scaled by the same function."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return _to_unit_range(img)[0]


def no_limit(width: int, height: int) -> None:
    """A size check that accepts every image (decode_image's refuses below 32 x 32)."""


def samples(dtype: type, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth content plus noise, and both extremes, so every filter's predictors are exercised."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    ramp = np.linspace(0, top, shape[0] * shape[1]).reshape(shape)
    values = np.clip(ramp + rng.normal(0, top / 20, shape), 0, top).astype(dtype)
    values.flat[:2] = (0, top)
    return values


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8])
@pytest.mark.parametrize("filters", ["none", "sub", "up", "average", "paeth", "mixed"])
def test_every_filter_type_gives_pillows_pixels(dtype, filters):
    values = samples(dtype, (40, 37))
    kinds = {"none": 0, "sub": 1, "up": 2, "average": 3, "paeth": 4}
    rng = np.random.default_rng(1)
    per_row = list(rng.integers(0, 5, 40)) if filters == "mixed" else [kinds[filters]] * 40
    data = encode_png(values, per_row)
    expected = pillow_pixels(data)
    # The test encoder is right: Pillow reads back the samples it was given.
    assert np.array_equal(np.rint(expected * np.iinfo(dtype).max), values)
    fast = png.decode_grayscale(data, no_limit)
    assert fast is not None
    assert fast[1] == (16 if dtype == np.uint16 else 8)
    assert fast[0].dtype == np.float32 and np.array_equal(fast[0], expected)  # bit for bit, not approximately


@pytest.mark.parametrize("shape", [(1, 1), (1, 50), (50, 1), (3, 2)])
def test_tiny_and_thin_images(shape):
    values = samples(np.uint16, shape, seed=2)
    data = encode_png(values, [(4, 1, 3)[row % 3] for row in range(shape[0])])
    fast = png.decode_grayscale(data, no_limit)
    assert fast is not None and np.array_equal(fast[0], pillow_pixels(data))


def test_pillows_own_encoding_and_many_idat_chunks():
    values = samples(np.uint16, (64, 48), seed=3)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG")  # Pillow picks each row's filter itself
    assert np.array_equal(decode_image(buffer.getvalue()).pixels, pillow_pixels(buffer.getvalue()))
    split = encode_png(values, [4] * 64, idat_size=7)
    fast = png.decode_grayscale(split, no_limit)
    assert fast is not None and np.array_equal(fast[0], pillow_pixels(split))


def test_decode_image_takes_the_fast_path_for_grayscale():
    values = samples(np.uint16, (64, 48), seed=4)
    data = encode_png(values, [2] * 64)
    decoded = decode_image(data)
    assert (decoded.format, decoded.bits) == ("PNG", 16)
    assert np.array_equal(decoded.pixels, png.decode_grayscale(data, no_limit)[0])


@pytest.mark.parametrize(
    "case",
    ["rgb", "palette", "1-bit", "interlaced"],
)
def test_other_pngs_are_left_to_pillow(case):
    if case == "rgb":
        data = encode_image(np.zeros((40, 40, 3), np.uint8))
    elif case == "palette":
        data = encode_image(np.zeros((40, 40), np.uint8), mode="P")
    elif case == "1-bit":
        data = encode_image(np.zeros((40, 40), bool), mode="1")
    else:
        data = encode_png(samples(np.uint8, (40, 40)), [0] * 40, interlace=1)
    assert png.decode_grayscale(data, no_limit) is None
    if case != "interlaced":  # the made-up interlaced file holds non-interlaced rows; only the routing matters
        assert decode_image(data).pixels.shape == (40, 40)


def encode_image(array: np.ndarray, mode: str | None = None) -> bytes:
    img = Image.fromarray(array)
    if mode is not None:
        img = img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _with_filter_byte(value: int) -> bytes:
    """An 8-bit 40 x 40 grayscale PNG whose second row has the filter type byte ``value``."""
    values = samples(np.uint8, (40, 40))
    rows = bytearray(_filtered(values, 1, [0] * 40))
    rows[41] = value
    header = struct.pack(">IIBBBBB", 40, 40, 8, 0, 0, 0, 0)
    return png.SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(bytes(rows))) + _chunk(b"IEND", b"")


def _malformed(case: str) -> bytes:
    values = samples(np.uint16, (40, 40))
    good = encode_png(values, [4] * 40)
    if case == "truncated":
        return good[: len(good) // 2]
    if case == "unknown filter type":
        return _with_filter_byte(5)
    if case == "bad IHDR CRC":
        return good[:29] + b"\x00\x00\x00\x00" + good[33:]
    if case == "no IDAT":
        return good[:33] + _chunk(b"IEND", b"")
    if case == "more data than declared":
        header = struct.pack(">IIBBBBB", 40, 33, 16, 0, 0, 0, 0)  # 33 rows declared, 40 stored
        return good[:8] + _chunk(b"IHDR", header) + good[33:]
    if case == "too little data":
        header = struct.pack(">IIBBBBB", 40, 60, 16, 0, 0, 0, 0)
        return good[:8] + _chunk(b"IHDR", header) + good[33:]
    if case == "corrupt deflate":
        start = good.index(b"IDAT") + 4
        return good[: start + 2] + b"\xff" * 40 + good[start + 42 :]
    raise AssertionError(case)


MALFORMED = [
    "truncated",
    "unknown filter type",
    "bad IHDR CRC",
    "no IDAT",
    "more data than declared",
    "too little data",
    "corrupt deflate",
]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_files_go_to_pillow(case):
    data = _malformed(case)
    assert png.decode_grayscale(data, no_limit) is None
    try:
        expected = pillow_pixels(data)
    except Exception:  # Pillow refuses it: so must decode_image, with its message
        with pytest.raises(ImageDecodeError, match="PNG|image"):
            decode_image(data)
    else:  # Pillow reads what it can (e.g. stops after the declared rows): so does decode_image
        assert np.array_equal(decode_image(data).pixels, expected)


def test_size_limit_is_checked_before_inflating():
    values = samples(np.uint16, (40, 40))
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 16, 0, 0, 0, 0)
    data = png.SIGNATURE + _chunk(b"IHDR", header) + encode_png(values, [0] * 40)[33:]
    with pytest.raises(ImageTooLargeError, match="100000x100000"):
        decode_image(data, max_pixels=80_000_000)


def test_compile_decoder_prepares_both_depths():
    png.compile_decoder()
    for dtype in (np.uint8, np.uint16):
        data = encode_png(samples(dtype, (8, 8)), [1] * 8)
        fast = png.decode_grayscale(data, no_limit)
        assert fast is not None and fast[1] == np.iinfo(dtype).bits and np.array_equal(fast[0], pillow_pixels(data))


@pytest.mark.parametrize("case", ["whole", "unknown filter type in row 900", "cut in the middle"])
def test_large_images_are_unfiltered_on_a_helper_thread_while_inflating(case):
    """Over half a megapixel the rows go to a helper thread in steps; the result is the same."""
    values = samples(np.uint16, (1000, 640), seed=5)
    rng = np.random.default_rng(6)
    filters = list(rng.integers(0, 5, 1000))
    if case == "unknown filter type in row 900":
        filters[900] = 7
    data = encode_png(values, filters, idat_size=8192)
    if case == "cut in the middle":
        data = data[: len(data) // 2]
    fast = png.decode_grayscale(data, no_limit)
    if case == "whole":
        assert fast is not None and np.array_equal(fast[0], pillow_pixels(data))
    else:
        assert fast is None
        with pytest.raises(ImageDecodeError):
            decode_image(data)


def test_while_the_loop_compiles_in_the_background_pillow_decodes(monkeypatch):
    """The service compiles in the background; meanwhile the same pixels come from Pillow, then from the loop."""
    data = encode_png(samples(np.uint16, (40, 40)), [4] * 40)
    expected = pillow_pixels(data)
    monkeypatch.setattr(png, "_ready", None)  # as in a fresh process
    monkeypatch.setattr(png, "_background", None)
    with png._build_lock:  # holds the compile back, so the state below is certain
        png.compile_decoder(background=True)
        assert png.decode_grayscale(data, no_limit) is None
        assert np.array_equal(decode_image(data).pixels, expected)
    png._background.join(timeout=120)
    fast = png.decode_grayscale(data, no_limit)
    assert fast is not None and np.array_equal(fast[0], expected)


def test_where_numba_cannot_compile_pillow_decodes_everything(monkeypatch, caplog):
    def broken(function):
        raise OSError("no LLVM here")  # what a platform without a working llvmlite gives

    data = encode_png(samples(np.uint16, (40, 40)), [3] * 40)
    monkeypatch.setattr(png, "_ready", None)
    monkeypatch.setattr(png, "_failed", False)
    monkeypatch.setattr(png, "_compile", broken)
    assert png.decode_grayscale(data, no_limit) is None
    assert "could not be compiled" in caplog.text
    assert np.array_equal(decode_image(data).pixels, pillow_pixels(data))
    png.compile_decoder(background=False)  # asks again: still Pillow, no second attempt, no exception
    assert png._failed and png._ready is None
