"""DICOM on POST /explain: syntaxes, bit depths, presentation intents, SOP classes, tags echoed, bad files.

Every DICOM is written here with pydicom from the phantom mammogram, so the
expected explanation is the phantom's own.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from service.logging import JsonFormatter

MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
STUDY, SERIES, INSTANCE = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"
PATIENT = {"PatientName": "Roe^Richard", "PatientID": "MRN-7310027", "PatientBirthDate": "19570923"}


def phantom_pixels(png: bytes, bits: int) -> np.ndarray:
    """The phantom's 16-bit values reduced to ``bits`` bits."""
    arr = np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint16)
    return (arr >> (16 - bits)).astype(np.uint8 if bits <= 8 else np.uint16)


def dataset(arr: np.ndarray, *, bits: int, sop_class: str = MG_PRESENTATION, **tags: object) -> Dataset:
    """A mammography data set holding ``arr``, with patient identifiers that must never come out."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = INSTANCE
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    for keyword, value in PATIENT.items():
        setattr(ds, keyword, value)
    ds.Modality = "MG"
    ds.set_pixel_data(arr, tags.pop("photometric", "MONOCHROME2"), bits, generate_instance_uid=False)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds: Dataset, **kw: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=kw.pop("enforce_file_format", True), **kw)
    return buf.getvalue()


def explain(client: TestClient, data: bytes, **params: Any) -> Any:
    params.setdefault("maps", "json")
    return client.post("/explain", files={"file": ("x.dcm", data, "application/dicom")}, params=params)


def ok(client: TestClient, data: bytes) -> dict[str, Any]:
    response = explain(client, data)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def same_explanation(a: dict[str, Any], b: dict[str, Any], rtol: float = 1e-5) -> None:
    """Same prediction, scores, classifier probabilities, CAM within ``rtol`` (of the CAM's scale), same top units."""
    assert a["predicted_class"] == b["predicted_class"]
    for c in a["classes"]:
        assert a["scores"][c] == pytest.approx(b["scores"][c], abs=rtol)
        assert a["classifier_probabilities"][c] == pytest.approx(b["classifier_probabilities"][c], abs=rtol)
    cam_a, cam_b = np.array(a["cam"]["values"]), np.array(b["cam"]["values"])
    np.testing.assert_allclose(cam_a, cam_b, rtol=rtol, atol=rtol * np.abs(cam_b).max())
    assert [u["unit_id"] for u in a["units"]][:3] == [u["unit_id"] for u in b["units"]][:3]


@pytest.fixture(scope="module")
def reference(client: TestClient, phantom_png: bytes) -> dict[str, Any]:
    """The phantom as a 16-bit PNG, explained."""
    response = client.post("/explain", files={"file": ("m.png", phantom_png, "image/png")}, params={"maps": "json"})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


# -- what the response says -------------------------------------------------


def test_mammogram_tags_are_echoed(client: TestClient, phantom_png: bytes) -> None:
    arr = phantom_pixels(phantom_png, 12)
    ds = dataset(
        arr, bits=12, ImageLaterality="L", ViewPosition="MLO", PresentationIntentType="FOR PRESENTATION",
        WindowCenter=2048, WindowWidth=4096, ImagerPixelSpacing=[0.07, 0.07],
    )
    body = ok(client, dicom_bytes(ds))
    assert body["image"]["format"] == "DICOM" and body["image"]["bits"] == 12
    assert body["image"]["shape"] == list(arr.shape)
    assert body["image"]["dicom"] == {
        "study_instance_uid": STUDY,
        "series_instance_uid": SERIES,
        "sop_instance_uid": INSTANCE,
        "sop_class": "Digital Mammography X-Ray Image Storage - For Presentation",
        "sop_class_uid": MG_PRESENTATION,
        "modality": "MG",
        "laterality": "L",
        "view": "MLO",
        "presentation_intent": "FOR PRESENTATION",
        "transfer_syntax": "Explicit VR Little Endian",
        "transfer_syntax_uid": uid.ExplicitVRLittleEndian,
    }
    assert not any(value in json.dumps(body) for value in PATIENT.values())


def test_non_dicom_uploads_have_no_dicom_block(reference: dict[str, Any]) -> None:
    assert reference["image"]["dicom"] is None


def test_images_are_explained_as_stored_whatever_the_laterality(client: TestClient, phantom_png: bytes) -> None:
    """No flipping by laterality or view, as in training: the tags change the echo, never the explanation."""
    arr = phantom_pixels(phantom_png, 16)
    left = ok(client, dicom_bytes(dataset(arr, bits=16, ImageLaterality="L", ViewPosition="CC")))
    right = ok(client, dicom_bytes(dataset(arr, bits=16, ImageLaterality="R", ViewPosition="MLO")))
    assert (left["image"]["dicom"]["laterality"], right["image"]["dicom"]["laterality"]) == ("L", "R")
    assert (left["image"]["dicom"]["view"], right["image"]["dicom"]["view"]) == ("CC", "MLO")
    assert left["scores"] == right["scores"] and left["cam"] == right["cam"]
    assert left["classifier_probabilities"] == right["classifier_probabilities"]
    assert left["image"]["shape"] == right["image"]["shape"] == list(arr.shape)


# -- pixel data --------------------------------------------------------------


@pytest.mark.parametrize("bits", [12, 16])
@pytest.mark.parametrize(
    "syntax", [uid.ExplicitVRLittleEndian, uid.RLELossless, uid.JPEG2000Lossless, uid.JPEGLSLossless]
)
def test_lossless_syntaxes_explain_like_the_png(
    client: TestClient, phantom_png: bytes, reference: dict[str, Any], syntax: str, bits: int
) -> None:
    ds = dataset(phantom_pixels(phantom_png, bits), bits=bits)
    if syntax != uid.ExplicitVRLittleEndian:
        ds.compress(syntax, generate_instance_uid=False)
    body = ok(client, dicom_bytes(ds))
    assert body["image"]["dicom"]["transfer_syntax_uid"] == syntax and body["image"]["bits"] == bits
    # Dropping the 4 low bits changes the pixels by at most 15 / 65535, and the CAM by about 0.05 %.
    same_explanation(body, reference, rtol=1e-5 if bits == 16 else 2e-3)


def test_jpeg_baseline_secondary_capture_of_digitised_film(client: TestClient, phantom_png: bytes) -> None:
    """Digitised film: 8-bit Secondary Capture, JPEG compressed, no pixel spacing, no window, burned-in text."""
    arr = phantom_pixels(phantom_png, 8)
    arr[4:12, 4:60] = 255  # a burned-in label
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    ds = dataset(arr, bits=8, sop_class=SECONDARY_CAPTURE)
    ds.Modality = "OT"
    ds.file_meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    body = ok(client, dicom_bytes(ds))
    dicom = body["image"]["dicom"]
    assert dicom["sop_class"] == "Secondary Capture Image Storage" and dicom["modality"] == "OT"
    assert dicom["transfer_syntax"] == "JPEG Baseline (Process 1)"
    assert dicom["laterality"] is None and dicom["view"] is None and dicom["presentation_intent"] is None
    assert body["image"]["bits"] == 8


def test_for_processing_image_without_window(client: TestClient, phantom_png: bytes) -> None:
    """Raw detector data (14 of 16 bits, MONOCHROME1, no window) maps over the stored range and explains."""
    from deepminer.imaging import decode_image

    arr = phantom_pixels(phantom_png, 14)
    ds = dataset(
        16383 - arr, bits=14, sop_class=MG_PROCESSING, photometric="MONOCHROME1",
        PresentationIntentType="FOR PROCESSING",
    )
    data = dicom_bytes(ds)
    pixels = decode_image(data).pixels
    np.testing.assert_allclose(pixels, arr / 16383.0, atol=1e-6)  # MONOCHROME1 inverted back, no window
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0 and pixels.std() > 0.05  # not flat, not clipped
    body = ok(client, data)
    assert body["image"]["dicom"]["presentation_intent"] == "FOR PROCESSING"
    assert body["image"]["dicom"]["sop_class"] == "Digital Mammography X-Ray Image Storage - For Processing"
    assert body["image"]["bits"] == 14
    assert sum(body["classifier_probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_data_set_without_preamble_or_file_meta(client: TestClient, phantom_png: bytes, reference: dict[str, Any]) -> None:
    ds = dataset(phantom_pixels(phantom_png, 16), bits=16)
    del ds.file_meta
    data = dicom_bytes(ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert data[128:132] != b"DICM"
    body = ok(client, data)
    assert body["image"]["dicom"]["transfer_syntax"] == "Implicit VR Little Endian"
    same_explanation(body, reference)


def test_compact_maps_are_the_default_for_dicom_too(client: TestClient, phantom_png: bytes) -> None:
    response = explain(client, dicom_bytes(dataset(phantom_pixels(phantom_png, 16), bits=16)), maps="uint16")
    assert response.status_code == 200 and response.json()["cam"]["encoding"] == "uint16"


# -- bad files ---------------------------------------------------------------


def assert_error(response: Any, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["field"] == "file"
    assert all(word in error["message"] for word in words), error["message"]
    assert not any(value in response.text for value in PATIENT.values())


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")
def test_not_dicom_behind_a_dicom_marker(client: TestClient) -> None:
    assert_error(explain(client, b"\x00" * 128 + b"DICM" + b"\xff" * 300), 422, "corrupt_image")


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")
@pytest.mark.parametrize("syntax", [uid.ExplicitVRLittleEndian, uid.JPEG2000Lossless])
def test_truncated_file(client: TestClient, phantom_png: bytes, syntax: str) -> None:
    ds = dataset(phantom_pixels(phantom_png, 12), bits=12)
    if syntax != uid.ExplicitVRLittleEndian:
        ds.compress(syntax, generate_instance_uid=False)
    data = dicom_bytes(ds)
    for cut in (len(data) - 200, len(data) // 2, 400):
        assert_error(explain(client, data[:cut]), 422, "corrupt_image", "truncated")


def test_no_pixel_data(client: TestClient, phantom_png: bytes) -> None:
    """A structured report, say: readable DICOM, no image."""
    ds = dataset(phantom_pixels(phantom_png, 12), bits=12)
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid.BasicTextSRStorage
    assert_error(explain(client, dicom_bytes(ds)), 422, "no_pixel_data", "no Pixel Data", "Basic Text SR")


def test_unsupported_syntax_and_multi_frame(client: TestClient, phantom_png: bytes) -> None:
    mpeg = dataset(phantom_pixels(phantom_png, 8), bits=8)
    mpeg.file_meta.TransferSyntaxUID = uid.MPEG2MPML
    mpeg.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    mpeg["PixelData"].VR = "OB"
    assert_error(explain(client, dicom_bytes(mpeg)), 415, "unsupported_dicom", "MPEG2")
    frame = phantom_pixels(phantom_png, 12)
    tomo = dataset(np.stack([frame, frame, frame]), bits=12)
    assert_error(explain(client, dicom_bytes(tomo)), 415, "unsupported_dicom", "multi-frame", "3 frames")


@pytest.mark.parametrize("compressed", [False, True])
def test_decompression_bomb_is_refused_from_the_header(client: TestClient, compressed: bool) -> None:
    """60000 x 60000 declared, a few bytes present: 413 before any pixel is decoded or allocated."""
    ds = dataset(np.zeros((64, 64), np.uint16), bits=16)
    if compressed:
        ds.compress(uid.RLELossless, generate_instance_uid=False)
    ds.Rows = ds.Columns = 60_000
    started = time.perf_counter()
    assert_error(explain(client, dicom_bytes(ds)), 413, "image_too_large", "60000x60000")
    assert time.perf_counter() - started < 2.0


# -- logs ----------------------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every log line of the service, as production formats it, at debug level."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("service", "deepminer")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")
def test_no_patient_identifier_or_uid_is_logged(client: TestClient, phantom_png: bytes, json_log: io.StringIO) -> None:
    arr = phantom_pixels(phantom_png, 12)
    good = dicom_bytes(dataset(arr, bits=12, WindowCenter=2000, WindowWidth=0, ImageLaterality="R"))
    assert explain(client, good).status_code == 200  # its unusable window is logged as a warning
    explain(client, good[: len(good) // 2])
    explain(client, b"\x00" * 128 + b"DICM" + b"\xff" * 300)
    text = json_log.getvalue()
    assert "ignoring DICOM window" in text
    for line in text.splitlines():
        json.loads(line)
    for secret in (*PATIENT.values(), "Roe", STUDY, SERIES, INSTANCE):
        assert secret not in text
