"""DICOM decoding: the display pipeline, every compressed syntax we read, and every kind of bad file.

All DICOMs are written here with pydicom. Expected pixels are computed from
the DICOM standard's formulas directly (PS3.3 C.11), not through the code
under test.
"""

from __future__ import annotations

import io
import logging
import struct

import numpy as np
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from deepminer.dicom import DicomInfo, decode_dicom, looks_like_dicom, read_dicom_info
from deepminer.imaging import ImageDecodeError, ImageTooLargeError, decode_image, read_image

MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-424242", "PatientBirthDate": "19600101"}


def image(bits: int, shape: tuple[int, int] = (64, 48), seed: int = 0) -> np.ndarray:
    """A gradient with noise that spans the whole ``bits`` range (0 and the maximum included)."""
    rng = np.random.default_rng(seed)
    top = 2**bits - 1
    ramp = np.linspace(0, top, shape[0] * shape[1]).reshape(shape)
    noisy = ramp + rng.normal(0, top / 50, shape)
    out = np.clip(np.rint(noisy), 0, top)
    out[0, 0], out[-1, -1] = 0, top
    return out.astype(np.uint8 if bits <= 8 else np.uint16)


def dataset(
    arr: np.ndarray,
    *,
    bits: int,
    photometric: str = "MONOCHROME2",
    sop_class: str = MG_PRESENTATION,
    **tags: object,
) -> Dataset:
    """A mammography-like data set holding ``arr``, with patient identifiers that must never come out."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.3"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.5.6.1", "1.2.3.4.5.6.2"
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.Modality = "MG"
    ds.set_pixel_data(arr, photometric, bits, generate_instance_uid=False)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds: Dataset, **kw: object) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=kw.pop("enforce_file_format", True), **kw)
    return buf.getvalue()


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out case by case, output range [0, 1]."""
    x = x.astype(np.float64)
    out = (x - (center - 0.5)) / (width - 1) + 0.5
    out[x <= center - 0.5 - (width - 1) / 2] = 0.0
    out[x > center - 0.5 + (width - 1) / 2] = 1.0
    return out


# ---------------------------------------------------------------- display pipeline


@pytest.mark.parametrize("bits", [12, 16])
def test_monochrome2_window_first_value_and_metadata(bits, caplog):
    arr = image(bits)
    top = 2**bits - 1
    center, width = top * 0.4, top * 0.5
    ds = dataset(
        arr, bits=bits, WindowCenter=[center, 10.0], WindowWidth=[width, 5.0],
        ImageLaterality="L", ViewPosition="MLO", PresentationIntentType="FOR PRESENTATION",
        ImagerPixelSpacing=[0.07, 0.07],
    )
    with caplog.at_level(logging.DEBUG):
        decoded = decode_image(dicom_bytes(ds))
    assert decoded.format == "DICOM" and decoded.bits == bits
    assert decoded.pixels.dtype == np.float32 and decoded.pixels.shape == arr.shape
    np.testing.assert_allclose(decoded.pixels, linear_window(arr, center, width), atol=1e-6)
    assert decoded.dicom == DicomInfo(
        study_instance_uid="1.2.3.4.5.6.1",
        series_instance_uid="1.2.3.4.5.6.2",
        sop_instance_uid="1.2.3.4.5.6.3",
        sop_class_uid=MG_PRESENTATION,
        modality="MG",
        laterality="L",
        view="MLO",
        photometric_interpretation="MONOCHROME2",
        presentation_intent="FOR PRESENTATION",
        pixel_spacing_mm=(0.07, 0.07),
        transfer_syntax_uid=uid.ExplicitVRLittleEndian,
        rows=64,
        columns=48,
        frames=1,
        bits_stored=bits,
    )
    assert decoded.dicom.sop_class_name == "Digital Mammography X-Ray Image Storage - For Presentation"
    seen = repr(decoded.dicom) + caplog.text
    assert not any(value in seen for value in PATIENT.values())


def test_monochrome1_is_inverted_over_the_stored_range():
    arr = image(12)
    ds = dataset(arr, bits=12, photometric="MONOCHROME1", Laterality="R", PixelSpacing=[0.1, 0.1])
    decoded = decode_image(dicom_bytes(ds))
    np.testing.assert_allclose(decoded.pixels, 1.0 - arr / 4095.0, atol=1e-6)
    assert decoded.dicom.laterality == "R" and decoded.dicom.pixel_spacing_mm == (0.1, 0.1)


def test_monochrome1_window_then_inversion():
    arr = image(12)
    ds = dataset(arr, bits=12, photometric="MONOCHROME1", WindowCenter=2000, WindowWidth=1000)
    np.testing.assert_allclose(decode_image(dicom_bytes(ds)).pixels, 1.0 - linear_window(arr, 2000, 1000), atol=1e-6)


def test_rescale_slope_intercept_before_window_and_without_it():
    arr = image(12)
    hu = arr.astype(np.float64) * 2.0 - 1000.0
    windowed = dataset(arr, bits=12, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=3000, WindowWidth=4000)
    np.testing.assert_allclose(decode_image(dicom_bytes(windowed)).pixels, linear_window(hu, 3000, 4000), atol=1e-6)
    # No window: the stored range [0, 4095] through the rescale is [-1000, 7190].
    plain = dataset(arr, bits=12, RescaleSlope=2, RescaleIntercept=-1000)
    np.testing.assert_allclose(decode_image(dicom_bytes(plain)).pixels, (hu + 1000) / 8190, atol=1e-6)


def test_modality_lut_sequence_maps_to_its_output_range():
    arr = image(12)
    lut = (np.sqrt(np.arange(4096) / 4095.0) * 3000 + 500).astype(np.uint16)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    item.ModalityLUTType = "US"
    item.add_new("LUTData", "US", lut.tolist())
    ds = dataset(arr, bits=12, ModalityLUTSequence=Sequence([item]))
    expected = (lut[arr].astype(np.float64) - 500) / (lut.max() - 500)
    np.testing.assert_allclose(decode_image(dicom_bytes(ds)).pixels, expected, atol=1e-6)


def test_voi_lut_sequence_is_preferred_to_the_window():
    arr = image(16)
    lut = (np.linspace(0, 1, 4096) ** 0.5 * 65535).astype(np.uint16)
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 1000, 16])  # first mapped value 1000, 16-bit entries
    item.add_new("LUTData", "US", lut.tolist())
    ds = dataset(arr, bits=16, VOILUTSequence=Sequence([item]), WindowCenter=30000, WindowWidth=100)
    index = np.clip(arr.astype(np.int64) - 1000, 0, 4095)
    np.testing.assert_allclose(decode_image(dicom_bytes(ds)).pixels, lut[index] / 65535.0, atol=1e-6)


@pytest.mark.parametrize(
    ("function", "formula"),
    [
        ("LINEAR_EXACT", lambda x, c, w: np.clip((x - c) / w + 0.5, 0, 1)),
        ("SIGMOID", lambda x, c, w: 1 / (1 + np.exp(-4 * (x - c) / w))),
    ],
)
def test_voi_lut_functions(function, formula):
    arr = image(12)
    ds = dataset(arr, bits=12, WindowCenter=1800, WindowWidth=900, VOILUTFunction=function)
    expected = formula(arr.astype(np.float64), 1800.0, 900.0)
    np.testing.assert_allclose(decode_image(dicom_bytes(ds)).pixels, expected, atol=1e-6)


def test_unusable_window_falls_back_to_the_stored_range(caplog):
    arr = image(12)
    ds = dataset(arr, bits=12, WindowCenter=2000, WindowWidth=0)
    with caplog.at_level(logging.WARNING):
        pixels = decode_image(dicom_bytes(ds)).pixels
    np.testing.assert_allclose(pixels, arr / 4095.0, atol=1e-6)
    assert "ignoring DICOM window" in caplog.text


def test_secondary_capture_8bit_without_spacing_or_window():
    arr = image(8)
    ds = dataset(arr, bits=8, sop_class=SECONDARY_CAPTURE)
    ds.Modality = "OT"
    decoded = decode_image(dicom_bytes(ds))
    np.testing.assert_allclose(decoded.pixels, arr / 255.0, atol=1e-6)
    assert decoded.bits == 8 and decoded.dicom.pixel_spacing_mm is None
    assert decoded.dicom.sop_class_name == "Secondary Capture Image Storage"


def test_rgb_secondary_capture_becomes_luminance():
    rgb = np.stack([image(8, seed=s) for s in range(3)], axis=-1)
    ds = dataset(rgb, bits=8, photometric="RGB", sop_class=SECONDARY_CAPTURE)
    expected = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255.0
    np.testing.assert_allclose(decode_image(dicom_bytes(ds)).pixels, expected, atol=1e-6)


def test_dataset_without_preamble_or_file_meta(tmp_path):
    arr = image(12)
    ds = dataset(arr, bits=12)
    del ds.file_meta
    data = dicom_bytes(ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert data[128:132] != b"DICM" and looks_like_dicom(data)
    decoded = decode_image(data)
    np.testing.assert_allclose(decoded.pixels, arr / 4095.0, atol=1e-6)
    assert decoded.dicom.transfer_syntax_uid == uid.ImplicitVRLittleEndian
    # The same through a file, as training reads images and masks.
    (tmp_path / "bare.dcm").write_bytes(data)
    np.testing.assert_allclose(read_image(tmp_path / "bare.dcm"), arr / 4095.0, atol=1e-6)


def test_read_dicom_info_reads_the_header_only(tmp_path):
    ds = dataset(image(12), bits=12, ViewPosition="CC", ImageLaterality="R")
    path = tmp_path / "x.dcm"
    path.write_bytes(dicom_bytes(ds))
    info = read_dicom_info(path)
    assert (info.rows, info.columns, info.view, info.laterality) == (64, 48, "CC", "R")
    # Pixel Data cut off: the header is still readable, the image is not.
    cut = path.read_bytes()[:-1000]
    assert read_dicom_info(cut).rows == 64
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_dicom(cut)


# ---------------------------------------------------------------- compressed transfer syntaxes


def jpeg_lossless(arr: np.ndarray, precision: int, predictor: int = 1) -> bytes:
    """A JPEG lossless (process 14, ITU T.81 Annex H) codestream: one component, point transform 0.

    PyPI has no encoder for this syntax (pydicom's compress() and pylibjpeg only
    decode it), so the test writes one: Huffman table with all 17 difference
    categories at code length 5, predictor ``1..7``.
    """
    x = arr.astype(np.int64)
    ra, rb, rc = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    ra[:, 1:], rb[1:, :], rc[1:, 1:] = x[:, :-1], x[:-1, :], x[:-1, :-1]
    pred = {1: ra, 2: rb, 3: rc, 4: ra + rb - rc, 5: ra + ((rb - rc) >> 1),
            6: rb + ((ra - rc) >> 1), 7: (ra + rb) >> 1}[predictor].copy()
    pred[0, 1:], pred[1:, 0], pred[0, 0] = x[0, :-1], x[:-1, 0], 1 << (precision - 1)
    diff = (x - pred) % 65536
    diff = np.where(diff > 32768, diff - 65536, diff)
    bits = []
    for d in diff.ravel().tolist():
        ssss = 16 if d == 32768 else abs(d).bit_length()
        bits.append(format(ssss, "05b"))
        if 0 < ssss < 16:
            bits.append(format(d if d > 0 else d + (1 << ssss) - 1, f"0{ssss}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    scan = bytearray()
    for i in range(0, len(stream), 8):
        scan.append(int(stream[i : i + 8], 2))
        if scan[-1] == 0xFF:
            scan.append(0x00)  # byte stuffing
    rows, cols = arr.shape
    sof = b"\xff\xc3" + struct.pack(">HBHHBBBB", 11, precision, rows, cols, 1, 1, 0x11, 0)
    dht = b"\xff\xc4" + struct.pack(">HB", 2 + 17 + 17, 0x00) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sos = b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, 1, 0x00, predictor, 0, 0)
    return b"\xff\xd8" + sof + dht + sos + bytes(scan) + b"\xff\xd9"


def encapsulated(ds: Dataset, syntax: str, frame: bytes) -> Dataset:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


@pytest.mark.parametrize("bits", [12, 16])
@pytest.mark.parametrize("syntax", [uid.RLELossless, uid.JPEG2000Lossless, uid.JPEGLSLossless])
def test_lossless_syntaxes_encoded_with_pydicom(syntax, bits):
    arr = image(bits)
    ds = dataset(arr, bits=bits, photometric="MONOCHROME1")
    ds.compress(syntax, generate_instance_uid=False)
    decoded = decode_image(dicom_bytes(ds))
    assert decoded.dicom.transfer_syntax_uid == syntax
    np.testing.assert_allclose(decoded.pixels, 1.0 - arr / (2**bits - 1), atol=1e-6)


@pytest.mark.parametrize(
    ("syntax", "options", "max_error", "mean_error"),
    [
        (uid.JPEG2000, {"j2k_cr": [15]}, 0.15, 0.02),  # 15:1 drops much of the noise (sd 0.02)
        (uid.JPEGLSNearLossless, {"jls_error": 3}, 3.001 / 4095, 3 / 4095),  # JPEG-LS bounds the error by NEAR
    ],
)
def test_lossy_syntaxes_encoded_with_pydicom(syntax, options, max_error, mean_error):
    arr = image(12)
    ds = dataset(arr, bits=12)
    ds.compress(syntax, generate_instance_uid=False, **options)
    decoded = decode_image(dicom_bytes(ds))
    assert decoded.dicom.transfer_syntax_uid == syntax
    error = np.abs(decoded.pixels - arr / 4095.0)
    assert 0 < error.max() <= max_error and error.mean() <= mean_error  # really lossy, and close


@pytest.mark.parametrize("bits", [12, 16])
@pytest.mark.parametrize(("syntax", "predictor"), [(uid.JPEGLosslessSV1, 1), (uid.JPEGLossless, 7)])
def test_jpeg_lossless_process_14(syntax, predictor, bits):
    arr = image(bits)
    ds = encapsulated(dataset(arr, bits=bits), syntax, jpeg_lossless(arr, bits, predictor))
    decoded = decode_image(dicom_bytes(ds))
    assert decoded.dicom.transfer_syntax_uid == syntax
    np.testing.assert_allclose(decoded.pixels, arr / (2**bits - 1), atol=1e-6)


def test_jpeg_baseline_secondary_capture():
    arr = image(8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    ds = encapsulated(dataset(arr, bits=8, sop_class=SECONDARY_CAPTURE), uid.JPEGBaseline8Bit, buf.getvalue())
    decoded = decode_image(dicom_bytes(ds))
    assert np.abs(decoded.pixels - arr / 255.0).mean() < 0.02


def test_deflated_explicit_vr_little_endian():
    arr = image(16)
    ds = dataset(arr, bits=16)
    ds.file_meta.TransferSyntaxUID = uid.DeflatedExplicitVRLittleEndian
    np.testing.assert_allclose(decode_image(dicom_bytes(ds)).pixels, arr / 65535.0, atol=1e-6)


# ---------------------------------------------------------------- bad files


def test_not_dicom():
    png = io.BytesIO()
    Image.fromarray(image(8)).save(png, format="PNG")
    with pytest.raises(ImageDecodeError, match="not a DICOM file"):
        decode_dicom(png.getvalue())
    with pytest.raises(ImageDecodeError, match="not a recognised image"):
        decode_image(b"\x00" * 200)
    assert decode_image(png.getvalue()).dicom is None


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")
@pytest.mark.parametrize("syntax", [uid.ExplicitVRLittleEndian, uid.RLELossless, uid.JPEG2000Lossless])
def test_truncated(syntax):
    ds = dataset(image(12), bits=12)
    if syntax != uid.ExplicitVRLittleEndian:
        ds.compress(syntax, generate_instance_uid=False)
    data = dicom_bytes(ds)
    for cut in (len(data) - 200, len(data) // 2):
        with pytest.raises(ImageDecodeError, match="truncated"):
            decode_image(data[:cut])


def test_truncated_inside_the_header():
    data = dicom_bytes(dataset(image(12), bits=12, WindowCenter=100, WindowWidth=200))
    header_end = data.index(b"\xe0\x7f\x10\x00")  # the Pixel Data tag
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: header_end - 3])


def test_corrupt_codestream():
    ds = dataset(image(12), bits=12)
    ds.compress(uid.JPEG2000Lossless, generate_instance_uid=False)
    data = bytearray(dicom_bytes(ds))
    start = data.index(b"\xff\x4f\xff\x51")  # J2K SOC + SIZ markers
    data[start : start + 60] = b"\x13" * 60
    with pytest.raises(ImageDecodeError, match="corrupt or truncated JPEG 2000"):
        decode_image(bytes(data))


def test_no_pixel_data():
    ds = dataset(image(12), bits=12)
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid.BasicTextSRStorage
    with pytest.raises(ImageDecodeError, match=r"no Pixel Data \(7FE0,0010\): not an image \(Basic Text SR"):
        decode_image(dicom_bytes(ds))


def test_unsupported_transfer_syntax_is_named():
    ds = encapsulated(dataset(image(8), bits=8), uid.MPEG2MPML, b"\x00\x00\x01\xb3" + bytes(60))
    with pytest.raises(ImageDecodeError, match=r"unsupported DICOM transfer syntax MPEG2 Main Profile / Main Level"):
        decode_image(dicom_bytes(ds))


def test_multi_frame_is_refused():
    frames = np.stack([image(12, seed=s) for s in range(3)])
    ds = dataset(frames, bits=12)
    assert ds.NumberOfFrames == 3
    with pytest.raises(ImageDecodeError, match="multi-frame DICOM \\(3 frames"):
        decode_image(dicom_bytes(ds))


def test_decompression_bomb_refused_from_the_header():
    # The header declares 60000 x 60000 but the file holds a few bytes: refusing it
    # as too large (not as truncated) shows the size is checked before any decoding.
    ds = dataset(image(8), bits=8)
    ds.Rows = ds.Columns = 60000
    with pytest.raises(ImageTooLargeError, match="60000x60000 = 3600000000 pixels"):
        decode_image(dicom_bytes(ds))
    frames = dataset(np.stack([image(12, seed=s) for s in range(3)]), bits=12)
    with pytest.raises(ImageTooLargeError, match="64x3 frames = 9216 pixels, more than the limit of 5000"):
        decode_image(dicom_bytes(frames), max_pixels=5000)
    compressed = dataset(image(12), bits=12)
    compressed.compress(uid.JPEG2000Lossless, generate_instance_uid=False)
    with pytest.raises(ImageTooLargeError):
        decode_image(dicom_bytes(compressed), max_pixels=1000)


def test_unsupported_photometric_and_missing_tags():
    ds = dataset(image(8), bits=8, sop_class=SECONDARY_CAPTURE)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    with pytest.raises(ImageDecodeError, match="photometric interpretation 'PALETTE COLOR'"):
        decode_image(dicom_bytes(ds))
    ds = dataset(image(8), bits=8)
    del ds.BitsStored
    with pytest.raises(ImageDecodeError, match="lacks BitsStored"):
        decode_image(dicom_bytes(ds))


def test_errors_never_name_the_patient():
    messages = []
    ds = dataset(image(12), bits=12)
    data = dicom_bytes(ds)
    for bad in (data[: len(data) // 2], data[:400]):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(bad)
        messages.append(str(info.value))
    assert not any(value in m for m in messages for value in PATIENT.values())


def test_read_image_shape_from_headers(tmp_path):
    from deepminer.imaging import read_image_shape

    ds = dataset(image(12, shape=(70, 50)), bits=12)
    ds.compress(uid.JPEG2000Lossless, generate_instance_uid=False)
    (tmp_path / "a.dcm").write_bytes(dicom_bytes(ds))
    Image.fromarray(image(8, shape=(40, 90))).save(tmp_path / "b.png")
    assert read_image_shape(tmp_path / "a.dcm") == (70, 50)
    assert read_image_shape(tmp_path / "b.png") == (40, 90)
    (tmp_path / "c.txt").write_text("not an image")
    with pytest.raises(ImageDecodeError, match="unreadable image header"):
        read_image_shape(tmp_path / "c.txt")
