"""The SR, Secondary Capture and GSPS of a real explanation: content, study placement, dciodvfy, privacy."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from annotations import NewAnnotation
from deepminer.grid import GridMapping, upsample
from service.explainer import ExplanationResult
from service.main import create_app
from service.overlays import Canvas
from service.pacs.equipment import Equipment
from service.pacs.outline import high_cam_outlines
from service.pacs.results import DicomResult, build_results
from service.pacs.source import read_header
from service.settings import Settings
from service.units import LabelWrite

SR_COMPREHENSIVE = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
LABELS = {0: ("Spiculated mass margin", "Mass"), 1: ("Fine pleomorphic calcifications", "Calcification")}
OTHER_BUNDLE_LABEL = "Label of another model"


@dataclass(frozen=True)
class Explained:
    source: bytes
    header: Dataset
    result: ExplanationResult
    equipment: Equipment
    results: dict[str, DicomResult]


@pytest.fixture(scope="module")
def app_client(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = tmp_path_factory.mktemp("pacs-db") / "labels.db"
    with TestClient(create_app(Settings(bundle=tiny_bundle, database_url=f"sqlite:///{db}"))) as client:
        yield client


def explain(client: TestClient, source: bytes) -> Explained:
    """Explain ``source`` and write the three results, with expert labels on its two most influential units and,
    on the third, a label made under another bundle."""
    state: Any = client.app.state  # type: ignore[attr-defined]
    first = state.explainer.explain(source, top_k=5)
    for rank, unit in enumerate(first.units[:2]):
        label, category = LABELS[rank]
        if not any(a.annotator == "dr_pacs" for a in unit.annotations):
            state.catalog.annotate(LabelWrite(unit_id=unit.unit_id, annotator="dr_pacs", label=label, category=category))
    third = first.units[2]
    if not any(a.annotator == "dr_elsewhere" for a in third.annotations):
        state.store.add_many([
            NewAnnotation(unit_id=third.unit_id, annotator="dr_elsewhere", label=OTHER_BUNDLE_LABEL,
                          category="Mass", bundle_hash="0" * 64)
        ])
    result = state.explainer.explain(source, top_k=5)
    header = read_header(source)
    equipment = Equipment.for_model(result.model, software_version="9.9.9")
    results = {r.kind: r for r in build_results(result, header, equipment)}
    return Explained(source, header, result, equipment, results)


@pytest.fixture(scope="module")
def explained(app_client: TestClient, mammogram: bytes) -> Explained:
    return explain(app_client, mammogram)


def read(result: DicomResult) -> Dataset:
    """The result as a PACS would read it back: parsed from its Part 10 bytes."""
    return pydicom.dcmread(io.BytesIO(result.data))


def content_items(ds: Dataset) -> Iterator[Dataset]:
    for item in ds.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def meaning(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning)


# -- study placement ----------------------------------------------------------


def test_every_result_joins_the_source_study_in_a_series_of_its_own(explained: Explained) -> None:
    source = explained.header
    series = set()
    for kind, sop_class in (
        ("sr", SR_COMPREHENSIVE),
        ("secondary_capture", SECONDARY_CAPTURE),
        ("presentation_state", GSPS),
    ):
        ds = read(explained.results[kind])
        assert ds.SOPClassUID == sop_class
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate"):
            assert ds.get(keyword) == source.get(keyword), keyword
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.SOPInstanceUID != source.SOPInstanceUID
        assert ds.Manufacturer == "DeepMiner Service"
        assert list(ds.SoftwareVersions) == ["9.9.9", explained.result.model.hash]
        series.add(ds.SeriesInstanceUID)
    assert len(series) == 3


# -- the SR -------------------------------------------------------------------


def test_sr_is_a_tid1500_measurement_report(explained: Explained) -> None:
    sr = read(explained.results["sr"])
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert sr.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
    assert sr.CompletionFlag == "COMPLETE"
    assert any(s.CodingSchemeDesignator == "99DEEPMINER" for s in sr.CodingSchemeIdentificationSequence)


def test_sr_holds_the_classification_and_its_image_level_scores(explained: Explained) -> None:
    result = explained.result
    items = list(content_items(read(explained.results["sr"])))
    scores = {
        meaning(i): float(i.MeasuredValueSequence[0].NumericValue)
        for i in items
        if i.ValueType == "NUM" and meaning(i).startswith("Image-level score of ")
    }
    expected = {f"Image-level score of {c}": float(v) for c, v in zip(result.classes, result.scores)}
    assert scores.keys() == expected.keys()
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, rel=1e-6, abs=1e-9)
    assert not any(meaning(i).startswith("Probability of ") for i in items)
    evaluations = {meaning(i): i.ConceptCodeSequence[0].CodeMeaning for i in items if i.ValueType == "CODE"}
    assert evaluations["Predicted class"] == result.predicted_class == result.classes[int(np.argmax(result.scores))]
    assert evaluations["Explained class"] == result.explained_class
    parameters = {str(i.TextValue) for i in items if i.ValueType == "TEXT" and meaning(i) == "Algorithm Parameters"}
    assert f"image_score={result.score_rule}" in parameters


def unit_groups(sr: Dataset) -> dict[int, list[Dataset]]:
    """The SR's measurement groups tracked as ``unit <id>``, by unit id, in the SR's order."""
    groups = [g for g in content_items(sr) if g.ValueType == "CONTAINER" and meaning(g) == "Measurement Group"]
    by_unit = {}
    for group in groups:
        children = list(group.ContentSequence)
        tracking = [c.TextValue for c in children if meaning(c) == "Tracking Identifier"]
        if tracking and tracking[0].startswith("unit "):
            by_unit[int(tracking[0].split()[1])] = children
    return by_unit


def test_sr_names_exactly_the_units_and_labels_of_the_explanation(explained: Explained) -> None:
    sr = read(explained.results["sr"])
    by_unit = unit_groups(sr)
    named = explained.result.explanation.units
    assert list(by_unit) == [u.unit_id for u in named]
    assert [u.rank for u in named[:2]] == [1, 2]  # the two expert-labelled units; automatic labels are not admitted
    for unit in named:
        children = by_unit[unit.unit_id]
        concepts = {c.ConceptCodeSequence[0].CodeMeaning for c in children if meaning(c).startswith("Expert-named")}
        assert concepts == {label.label for label in unit.labels}
        assert not any(meaning(c).startswith("Automatically named") for c in children)
        influence = [c for c in children if meaning(c) == "Unit influence on the explained class"]
        assert float(influence[0].MeasuredValueSequence[0].NumericValue) == pytest.approx(unit.influence, rel=1e-6)
        rank = [c for c in children if meaning(c) == "Unit rank by influence"]
        assert float(rank[0].MeasuredValueSequence[0].NumericValue) == unit.rank
        finding = [c for c in children if meaning(c) == "Finding"]
        assert finding[0].ConceptCodeSequence[0].CodeValue == f"unit-{unit.unit_id}"
    meanings = {c.ConceptCodeSequence[0].CodeMeaning for c in content_items(sr) if c.ValueType == "CODE"}
    assert {label for label, _ in LABELS.values()} <= meanings
    # The third unit carries a label, but of another bundle: it is neither named nor a group of its own.
    third = explained.result.units[2]
    assert OTHER_BUNDLE_LABEL in {a.label for a in third.annotations}
    assert OTHER_BUNDLE_LABEL not in meanings and third.unit_id not in by_unit


def test_sr_flags_automatic_labels_when_they_are_admitted(
    make_client: Callable[..., Any], mammogram: bytes, dicom_errors: Callable[[bytes], list[str]]
) -> None:
    with make_client(explain_automatic_labels=True) as client:
        state: Any = client.app.state
        top = state.explainer.explain(mammogram, top_k=1).units[0]
        state.store.add_many([
            NewAnnotation(unit_id=top.unit_id, annotator="auto:test", label="Round mass", category="Mass",
                          bundle_hash=state.bundle.hash, source="automatic")
        ])
        other = explain(client, mammogram)
    named = other.result.explanation.units
    assert named[0].unit_id == top.unit_id and "Round mass" in {label.label for label in named[0].labels}
    children = unit_groups(read(other.results["sr"]))[top.unit_id]
    automatic = {c.ConceptCodeSequence[0].CodeMeaning for c in children if meaning(c).startswith("Automatically")}
    expert = {c.ConceptCodeSequence[0].CodeMeaning for c in children if meaning(c).startswith("Expert-named")}
    assert "Round mass" in automatic and expert == {LABELS[0][0]}
    assert list(unit_groups(read(other.results["sr"]))) == [u.unit_id for u in named]
    assert dicom_errors(other.results["sr"].data) == []


def test_sr_names_the_model_and_its_version(explained: Explained) -> None:
    items = list(content_items(read(explained.results["sr"])))
    texts = {(meaning(i), i.TextValue) for i in items if i.ValueType == "TEXT"}
    assert ("Algorithm Name", explained.equipment.model_name) in texts
    assert ("Algorithm Version", explained.result.model.hash) in texts
    devices = [i for i in items if i.ValueType == "TEXT" and meaning(i) == "Device Observer Model Name"]
    assert devices[0].TextValue == explained.result.model.id


def test_sr_references_the_source_image(explained: Explained) -> None:
    sr = read(explained.results["sr"])
    source = explained.header
    images = [i for i in content_items(sr) if i.ValueType == "IMAGE"]
    assert images and all(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID for i in images)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert referenced.ReferencedSOPClassUID == source.SOPClassUID


# -- the Secondary Capture ----------------------------------------------------


def test_capture_burns_the_cam_overlay_into_the_image(explained: Explained) -> None:
    sc = read(explained.results["secondary_capture"])
    result = explained.result
    assert sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
    assert sc.BurnedInAnnotation == "NO"  # the caption names class and model, never the patient
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == explained.header.SOPInstanceUID
    assert list(sc.PatientOrientation) == list(explained.header.PatientOrientation)
    pixels = sc.pixel_array
    expected = Canvas.for_image(result.pixels, result.mapping, max_side=2048).overlay(result.cam)
    assert pixels.shape == expected.shape
    band = pixels.shape[0] // 4  # below the caption the pixels are the overlay itself
    np.testing.assert_array_equal(pixels[band:], expected[band:])
    explained_score = result.scores[result.classes.index(result.explained_class)]
    assert sc.ImageComments.startswith(
        f"DeepMiner CAM: {result.explained_class} ({result.score_rule} score {explained_score:.2f})"
    )


# -- the presentation state ---------------------------------------------------


def inside(point: tuple[float, float], polygon: np.ndarray) -> bool:
    """Ray casting: whether (x, y) lies inside the closed polygon of (x, y) vertices."""
    x, y = point
    xs, ys = polygon[:, 0], polygon[:, 1]
    crossings = 0
    for i in range(len(polygon) - 1):
        (x1, y1), (x2, y2) = (xs[i], ys[i]), (xs[i + 1], ys[i + 1])
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            crossings += 1
    return crossings % 2 == 1


def test_presentation_state_outlines_the_high_cam_region_on_the_source(explained: Explained) -> None:
    pr = read(explained.results["presentation_state"])
    result = explained.result
    assert pr.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID == (
        explained.header.SOPInstanceUID
    )
    assert pr.ContentLabel == "DEEPMINER_CAM"
    annotation = pr.GraphicAnnotationSequence[0]
    assert annotation.GraphicLayer == "DEEPMINER_CAM"
    polylines = [np.asarray(g.GraphicData, dtype=float).reshape(-1, 2) for g in annotation.GraphicObjectSequence]
    assert polylines and all(g.GraphicType == "POLYLINE" for g in annotation.GraphicObjectSequence)
    assert all(g.GraphicAnnotationUnits == "PIXEL" for g in annotation.GraphicObjectSequence)
    rows, columns = result.image_shape
    for polyline in polylines:
        np.testing.assert_array_equal(polyline[0], polyline[-1])
        assert polyline[:, 0].min() >= 0 and polyline[:, 0].max() <= columns
        assert polyline[:, 1].min() >= 0 and polyline[:, 1].max() <= rows
    dense = upsample(result.cam, result.mapping)
    peak = np.unravel_index(np.argmax(dense), dense.shape)
    low = np.unravel_index(np.argmin(dense), dense.shape)
    # DICOM pixel coordinates: (column, row), the top left corner of the top left pixel at (0, 0).
    assert any(inside((peak[1] + 0.5, peak[0] + 0.5), p) for p in polylines)
    assert not any(inside((low[1] + 0.5, low[0] + 0.5), p) for p in polylines)
    assert "CAM" in annotation.TextObjectSequence[0].UnformattedTextValue
    assert pr.SoftcopyVOILUTSequence[0].WindowWidth == explained.header.WindowWidth


def test_outline_follows_the_half_range_level_of_the_upsampled_cam() -> None:
    """Brute force: every pixel at or above half the range lies inside an outline, every other pixel outside."""
    rng = np.random.default_rng(5)
    cam = rng.normal(size=(6, 5)).astype(np.float32)
    mapping = GridMapping.for_input(image_shape=(96, 80), input_shape=(192, 160))
    outlines = [np.stack([o[:, 1], o[:, 0]], axis=1) for o in high_cam_outlines(cam, mapping, max_side=512)]
    dense = upsample(cam, mapping).astype(np.float64)
    level = (dense - dense.min()) / (dense.max() - dense.min())
    margin = 0.02  # pixels whose level is this close to 0.5 may fall on either side of the traced line
    checked = 0
    for r in range(0, 96, 3):
        for c in range(0, 80, 3):
            if abs(level[r, c] - 0.5) < margin:
                continue
            within = sum(inside((c, r), o) for o in outlines) % 2 == 1  # holes count twice
            assert within == (level[r, c] >= 0.5), (r, c, level[r, c])
            checked += 1
    assert checked > 500


def test_a_flat_cam_has_no_outline() -> None:
    mapping = GridMapping.for_input(image_shape=(64, 64), input_shape=(128, 128))
    assert high_cam_outlines(np.ones((4, 4), dtype=np.float32), mapping) == []


# -- validation and privacy ---------------------------------------------------


@pytest.mark.parametrize("kind", ["sr", "secondary_capture", "presentation_state"])
def test_results_pass_dciodvfy(explained: Explained, kind: str, dicom_errors: Callable[[bytes], list[str]]) -> None:
    assert dicom_errors(explained.results[kind].data) == []


@pytest.mark.parametrize(
    "options", [{"full_header": False}, {"photometric": "MONOCHROME1"}], ids=["bare-header", "monochrome1"]
)
def test_results_of_other_sources_pass_dciodvfy(
    app_client: TestClient,
    new_mammogram: Callable[..., bytes],
    options: dict[str, Any],
    dicom_errors: Callable[[bytes], list[str]],
) -> None:
    other = explain(app_client, new_mammogram(**options))
    for kind, result in other.results.items():
        assert dicom_errors(result.data) == [], kind
    pr = read(other.results["presentation_state"])
    assert pr.PresentationLUTShape == ("INVERSE" if options.get("photometric") == "MONOCHROME1" else "IDENTITY")


def test_writing_results_logs_no_patient_identifier(
    app_client: TestClient, mammogram: bytes, patient_identifiers: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        explain(app_client, mammogram)
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert not any(text in logged for text in patient_identifiers)
