"""CSV and JSON export and import of the unit-label table."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from annotations import (
    RECORD_FIELDS,
    AnnotationRecord,
    AnnotationStore,
    AnnotationValidationError,
    LabelAnswers,
    NewAnnotation,
    export_annotations,
    import_annotations,
    load_annotation_rows,
)
from annotations.io import COLUMNS

MakeItem = Callable[..., NewAnnotation]
INPUT_FIELDS = [f.name for f in fields(NewAnnotation)]
HASH = "ab" * 32


def content(record: AnnotationRecord) -> dict[str, object]:
    """What an annotator said, without what the store assigned."""
    return {name: getattr(record, name) for name in INPUT_FIELDS}


def seed(store: AnnotationStore, make_item: MakeItem) -> list[AnnotationRecord]:
    return store.add_many(
        [
            make_item(unit_id=1814, annotator="dr_a", label="Edge of a mass", recognizable=True, phenomena="single"),
            make_item(
                unit_id=1814,
                annotator="dr_a",
                label="Edge of a mass with circumscribed margins",
                description='Smooth, "well-defined" edge,\nbenign-looking; ß ü 乳腺',
                cancer_association="no",
            ),
            make_item(
                unit_id=1152,
                annotator="auto:concept-iou",
                source="automatic",
                category="Calcification",
                label="Malignant pleomorphic calcifications",
                recognizable=False,
                cancer_association="yes",
            ),
        ]
    )


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_then_import_adds_new_versions_with_the_same_content(
    store: AnnotationStore, make_item: MakeItem, tmp_path: Path, fmt: str
) -> None:
    seed(store, make_item)
    before = store.all_latest()
    path = tmp_path / f"labels.{fmt}"

    assert export_annotations(store, path) == 2
    assert import_annotations(store, path) == 2

    after = store.all_latest()
    assert [content(r) for r in after] == [content(r) for r in before]
    assert [r.version for r in after] == [v + 1 for v in (r.version for r in before)]
    assert store.count() == 5
    assert store.history(unit_id=1814)[:2] == [r for r in store.all_versions() if r.unit_id == 1814][:2]


def test_export_writes_every_version_with_history(store: AnnotationStore, make_item: MakeItem, tmp_path: Path) -> None:
    records = seed(store, make_item)
    path = tmp_path / "history.json"

    assert export_annotations(store, path, history=True) == 3
    rows = json.loads(path.read_text(encoding="utf-8"))
    assert [row["id"] for row in rows] == [r.id for r in records]
    assert rows[0] == {**asdict(records[0]), "created_at": records[0].created_at.isoformat()}
    assert rows[0]["created_at"].endswith("+00:00")


def test_csv_export_spells_booleans_and_missing_values(
    store: AnnotationStore, make_item: MakeItem, tmp_path: Path
) -> None:
    seed(store, make_item)
    path = tmp_path / "labels.txt"
    export_annotations(store, path, fmt="csv", history=True)
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["recognizable"], row["phenomena"]) for row in rows] == [("true", "single"), ("", ""), ("false", "")]
    assert [row["unit_id"] for row in rows] == ["1814", "1814", "1152"]


def test_import_names_the_bad_row_and_writes_nothing(store: AnnotationStore, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(
        "unit_id,label,category\n12,Spiculation,Mass\n13,Smooth edges,Tumour\n",
        encoding="utf-8",
    )
    with pytest.raises(AnnotationValidationError, match=r"^row 2: category: must be one of 'Mass'") as caught:
        import_annotations(store, path, annotator="dr_a", bundle_hash=HASH)
    assert (caught.value.row, caught.value.field) == (2, "category")
    assert store.count() == 0


@pytest.mark.parametrize(
    ("text", "row", "field", "message"),
    [
        ("unit_id,label,category\n1.5,x,Mass\n", 1, "unit_id", "must be an integer, got '1.5'"),
        ("unit_id,label,category\n1,x,Mass\n-4,x,Mass\n", 2, "unit_id", "got -4"),
        ("unit_id,label,category,recognizable\n1,x,Mass,yes\n", 1, "recognizable", "'true', 'false' or empty"),
        ("unit_id,label,category,catgory\n1,x,Mass,Mass\n", 1, "catgory", "unknown column"),
        ("unit_id,category\n1,Mass\n", 1, "label", "missing"),
        ("unit_id,label,category\n1,,Mass\n", 1, "label", "must not be empty"),
        ("unit_id,label,category\n1,x,Mass,extra\n", 1, "row", "more cells than the header"),
    ],
)
def test_load_csv_errors_name_row_and_field(tmp_path: Path, text: str, row: int, field: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(AnnotationValidationError, match=message) as caught:
        load_annotation_rows(path, annotator="dr_a", bundle_hash=HASH)
    assert (caught.value.row, caught.value.field) == (row, field)


def test_load_seeds_automatic_labels_from_a_bundle_json(tmp_path: Path) -> None:
    path = tmp_path / "unit_labels.json"
    path.write_text(
        json.dumps(
            [
                {
                    "unit_id": 860,
                    "label": "Benign vascular calcifications",
                    "category": "Calcification",
                    "cancer_association": "no",
                    "description": "IoU 0.41 with vascular calcification masks",
                },
                {
                    "unit_id": 1299,
                    "label": "Spiculation",
                    "category": "Mass",
                    "cancer_association": "yes",
                    "description": "",
                    "annotator": "auto:other",
                    "recognizable": None,
                    "phenomena": "single",
                },
            ]
        ),
        encoding="utf-8",
    )
    rows = load_annotation_rows(path, annotator="auto:concept-iou", source="automatic", bundle_hash=HASH.upper())
    assert rows == [
        NewAnnotation(
            unit_id=860,
            annotator="auto:concept-iou",
            source="automatic",
            label="Benign vascular calcifications",
            category="Calcification",
            cancer_association="no",
            bundle_hash=HASH,
            description="IoU 0.41 with vascular calcification masks",
        ),
        NewAnnotation(
            unit_id=1299,
            annotator="auto:other",
            source="automatic",
            label="Spiculation",
            category="Mass",
            cancer_association="yes",
            bundle_hash=HASH,
            phenomena="single",
        ),
    ]


@pytest.mark.parametrize(
    ("payload", "row", "field", "message"),
    [
        (
            [{"unit_id": "860", "label": "x", "category": "Mass", "bundle_hash": HASH}],
            1,
            "unit_id",
            "integer, got '860'",
        ),
        (
            [{"unit_id": 1, "label": "x", "category": "Mass", "bundle_hash": HASH}, [1]],
            2,
            "row",
            "JSON object, got list",
        ),
        (
            [{"unit_id": 1, "label": "x", "category": "Mass", "bundle_hash": HASH, "recognizable": "true"}],
            1,
            "recognizable",
            "true, false or null",
        ),
        ([{"unit_id": 1, "label": "x", "category": "Mass", "bundle_hash": None}], 1, "bundle_hash", "missing"),
    ],
)
def test_load_json_errors_name_row_and_field(
    tmp_path: Path, payload: object, row: int, field: str, message: str
) -> None:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(AnnotationValidationError, match=message) as caught:
        load_annotation_rows(path, annotator="dr_a")
    assert (caught.value.row, caught.value.field) == (row, field)


def test_files_that_are_not_tables_are_refused(tmp_path: Path) -> None:
    not_a_list = tmp_path / "labels.json"
    not_a_list.write_text('{"unit_id": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match="JSON list of annotation objects, got dict"):
        load_annotation_rows(not_a_list)
    with pytest.raises(ValueError, match="from its suffix"):
        load_annotation_rows(tmp_path / "labels.txt")
    with pytest.raises(ValueError, match="fmt must be 'csv' or 'json', got 'xml'"):
        load_annotation_rows(not_a_list, fmt="xml")  # type: ignore[arg-type]


def test_one_based_json_ids_are_converted_on_load_only(tmp_path: Path) -> None:
    path = tmp_path / "paper.json"
    rows = [{"unit_id": 1814, "annotator": "dr_a", "label": "Edge of a mass", "category": "Mass"},
            {"unit_id": 1, "annotator": "dr_a", "label": "First unit", "category": "Other"}]
    path.write_text(json.dumps(rows), encoding="utf-8")
    assert [r.unit_id for r in load_annotation_rows(path, bundle_hash=HASH, one_based=True)] == [1813, 0]
    assert [r.unit_id for r in load_annotation_rows(path, bundle_hash=HASH)] == [1814, 1]
    path.write_text(json.dumps([*rows, {**rows[0], "unit_id": 0}]), encoding="utf-8")
    with pytest.raises(AnnotationValidationError, match="row 3: unit_id: is 0, but with one_based") as exc:
        load_annotation_rows(path, bundle_hash=HASH, one_based=True)
    assert exc.value.row == 3 and exc.value.field == "unit_id"
    path.write_text(json.dumps([{**rows[0], "unit_id": "1814"}]), encoding="utf-8")
    with pytest.raises(AnnotationValidationError, match=r"must be an integer, got '1814'"):
        load_annotation_rows(path, bundle_hash=HASH, one_based=True)


def test_not_recognisable_rows_need_no_label(tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("unit_id,label,category,recognizable\n3,,Other,false\n4,Mass edge,Mass,true\n", encoding="utf-8")
    rows = load_annotation_rows(csv_path, bundle_hash=HASH, annotator="dr_a")
    assert [(r.unit_id, r.label, r.recognizable) for r in rows] == [(3, "", False), (4, "Mass edge", True)]
    json_path = tmp_path / "labels.json"
    json_path.write_text(json.dumps([{"unit_id": 3, "category": "Other", "recognizable": False}]), encoding="utf-8")
    assert load_annotation_rows(json_path, bundle_hash=HASH, annotator="dr_a")[0].label == ""
    json_path.write_text(json.dumps([{"unit_id": 3, "category": "Other", "recognizable": None}]), encoding="utf-8")
    with pytest.raises(AnnotationValidationError, match="row 1: label: missing"):
        load_annotation_rows(json_path, bundle_hash=HASH, annotator="dr_a")


def test_file_columns_are_the_table_columns_and_the_record_fields() -> None:
    # The export format: the table's columns in its order, each a field of the stored record.
    assert COLUMNS == (
        "id", "unit_id", "annotator", "source", "version", "label", "category", "cancer_association",
        "recognizable", "phenomena", "description", "bundle_hash", "created_at",
    )  # fmt: skip
    assert sorted(COLUMNS) == sorted(RECORD_FIELDS)
    answers = {f.name for f in fields(LabelAnswers)}
    assert answers < {f.name for f in fields(NewAnnotation)} and answers < set(RECORD_FIELDS)
