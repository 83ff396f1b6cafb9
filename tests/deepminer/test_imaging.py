"""Decoding uploads and preprocessing, including every kind of bad input."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from deepminer import imaging
from deepminer.imaging import (
    ImageDecodeError,
    ImageTooLargeError,
    decode_image,
    network_input,
    normalise,
    resize,
)


def encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def gradient16():
    return (np.linspace(0, 65535, 64 * 48).reshape(64, 48)).astype(np.uint16)


def test_decodes_16bit_png_to_unit_range(gradient16):
    decoded = decode_image(encode(gradient16, "PNG"))
    assert decoded.bits == 16 and decoded.format == "PNG"
    assert decoded.pixels.dtype == np.float32 and decoded.pixels.shape == (64, 48)
    np.testing.assert_allclose(decoded.pixels, gradient16 / 65535.0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "JPEG"])
def test_decodes_8bit_formats(fmt):
    arr = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))
    decoded = decode_image(encode(arr, fmt))
    assert decoded.bits == 8 and decoded.format == fmt
    np.testing.assert_allclose(decoded.pixels, arr / 255.0, atol=0.03 if fmt == "JPEG" else 1e-6)


def test_decodes_16bit_tiff(gradient16):
    decoded = decode_image(encode(gradient16, "TIFF"))
    assert decoded.bits == 16
    np.testing.assert_allclose(decoded.pixels, gradient16 / 65535.0, atol=1e-6)


def test_colour_becomes_luminance():
    rgb = np.zeros((40, 40, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    assert decode_image(encode(rgb, "PNG")).pixels.mean() == pytest.approx(200 * 0.587 / 255, abs=0.01)


def test_bad_inputs_name_the_problem(gradient16):
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        decode_image(b"%PDF-1.4 this is not an image" * 10)
    png = encode(gradient16, "PNG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(png[: len(png) // 2])
    with pytest.raises(ImageDecodeError, match="too small"):
        decode_image(encode(np.zeros((8, 8), np.uint8), "PNG"))
    gif = encode(np.zeros((40, 40), np.uint8), "GIF")
    with pytest.raises(ImageDecodeError, match="unsupported image format 'GIF'"):
        decode_image(gif)


def _png_header_only(width: int, height: int, *, colour_type: int = 0, bit_depth: int = 16) -> bytes:
    """A PNG that declares ``width`` x ``height`` (colour type 0 grey, 2 RGB) and holds almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 10))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def _tiff_header_only(width: int, height: int) -> bytes:
    """A little-endian baseline TIFF (8-bit grey, one uncompressed strip) that declares its size and holds no pixels."""
    entries = [  # tag, type (3 SHORT, 4 LONG), value
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8 + 2 + 9 * 12 + 4),  # the strip would start right after this directory
        (277, 3, 1),
        (278, 4, height),
        (279, 4, width * height),
    ]
    directory = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        field = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)  # a SHORT is left-aligned
        directory += struct.pack("<HHI", tag, kind, 1) + field
    return b"II*\x00" + struct.pack("<I", 8) + directory + struct.pack("<I", 0)


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A real 64 x 64 JPEG whose frame header (SOF0) is rewritten to declare ``width`` x ``height``."""
    data = bytearray(encode(np.zeros((64, 64), np.uint8), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_decompression_bomb_refused_before_decoding():
    bomb = _png_header_only(60000, 60000)
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(bomb, max_pixels=50_000_000)
    with pytest.raises(ImageTooLargeError, match="more than the limit of 1000"):
        decode_image(_png_header_only(100, 100), max_pixels=1000)


# Each declares 10000 x 8001 = 80 010 000 pixels: just over the default limit (80 000 000), and under Pillow's own
# decompression-bomb guard (about 89 million), so only the service's check can refuse them. None holds the pixels
# it declares: decoding would fail as truncated, so a size error proves the header alone was read.
HEADERS_OVER_THE_LIMIT = {
    "TIFF": lambda: _tiff_header_only(10_000, 8_001),
    "JPEG": lambda: _jpeg_declaring(10_000, 8_001),
    "RGB PNG": lambda: _png_header_only(10_000, 8_001, colour_type=2, bit_depth=8),
}


@pytest.mark.parametrize("kind", list(HEADERS_OVER_THE_LIMIT))
def test_every_format_is_held_to_the_pixel_limit_before_decoding(kind):
    data = HEADERS_OVER_THE_LIMIT[kind]()
    with Image.open(io.BytesIO(data)) as img:  # the header is well-formed and declares the size
        assert img.size == (10_000, 8_001)
    expected = "declares 10000x8001 = 80010000 pixels, more than the limit of 80000000"
    with pytest.raises(ImageTooLargeError, match=expected):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG", "RGB PNG"])
@pytest.mark.parametrize(("height", "width"), [(31, 64), (64, 31), (8, 8)])
def test_every_format_is_held_to_the_minimum_size(fmt, height, width):
    if fmt == "RGB PNG":
        data = encode(np.full((height, width, 3), 90, np.uint8), "PNG")
    else:
        data = encode(np.full((height, width), 90, np.uint8), fmt)
    expected = f"too small to explain: {width}x{height} pixels, need at least 32x32"
    with pytest.raises(ImageDecodeError, match=expected):
        decode_image(data)
    smallest = np.full((32, 32, 3) if fmt == "RGB PNG" else (32, 32), 90, np.uint8)
    # 32 x 32 is the smallest image explained, and exactly max_pixels is within the limit.
    decoded = decode_image(encode(smallest, "PNG" if fmt == "RGB PNG" else fmt), max_pixels=32 * 32)
    assert decoded.pixels.shape == (32, 32) and decoded.format == fmt.split()[-1]


def test_network_input_scales_short_side_and_normalises():
    pixels = np.full((300, 200), 0.5, dtype=np.float32)
    x = network_input(pixels, short_side=128)
    assert x.shape == (1, 3, 192, 128)
    np.testing.assert_allclose(x[0, :, 0, 0], (0.5 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-5)
    assert normalise(np.zeros((5, 4, 4))).shape == (5, 3, 4, 4)
    same = resize(pixels, (300, 200))  # already that shape: returned as it is, not resampled
    assert same.dtype == np.float32 and np.array_equal(same, pixels)


@pytest.mark.parametrize(
    ("source", "target", "strips"),
    [
        ((3328, 2560), (1180, 908), 4),  # a mammogram to the network input: gcd 4 on both axes
        ((1500, 1200), (1201, 960), 4),  # rows share no factor (gcd 1), columns do (gcd 240): column strips
        ((1500, 1199), (1201, 961), 1),  # no whole-pixel boundary on either axis: one resize
        ((800, 700), (1200, 1050), 4),  # upscaling
    ],
)
def test_resize_in_strips_equals_one_pillow_resize(source, target, strips):
    pixels = np.random.default_rng(0).random(source, dtype=np.float32)
    edges = max(imaging._strip_edges(source[0], target[0]), imaging._strip_edges(source[1], target[1]), key=len)
    assert len(edges) - 1 == strips
    whole = np.asarray(Image.fromarray(pixels, mode="F").resize((target[1], target[0]), Image.Resampling.BILINEAR))
    got = resize(pixels, target)
    # The same filter weights; their double arithmetic may round the last float32 bits the other way.
    assert np.all(np.abs(got - whole) <= 2 * np.spacing(np.maximum(np.abs(got), np.abs(whole))))
    if strips == 1:
        assert np.array_equal(got, whole)


def test_small_outputs_are_one_pillow_resize():
    pixels = np.random.default_rng(2).random((908, 600), dtype=np.float32)
    whole = Image.fromarray(pixels, mode="F").resize((150, 227), Image.Resampling.BILINEAR)
    assert np.array_equal(resize(pixels, (227, 150)), np.asarray(whole))


def test_resize_result_does_not_depend_on_threads(monkeypatch):
    pixels = np.random.default_rng(1).random((2000, 1400), dtype=np.float32)
    parallel = resize(pixels, (1000, 700))  # 700k pixels, 4 strips: they run on the helper threads
    monkeypatch.setattr(imaging, "worth_splitting", lambda pixels: False)
    assert np.array_equal(resize(pixels, (1000, 700)), parallel)
