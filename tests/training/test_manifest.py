"""The manifest CSV contract: round trip, paths, labels and every ManifestError."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import pytest

from training.manifest import (
    COLUMNS,
    Finding,
    ImageRecord,
    ManifestError,
    format_descriptors,
    parse_descriptors,
    read_manifest,
    write_manifest,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _finding(root: Path, image_id: str, finding_id: str, pathology: str | None, **kw: object) -> Finding:
    return Finding(
        finding_id=finding_id,
        pathology=pathology,
        concept=str(kw.get("concept", "irregular mass with spiculated margins")),
        lexicon=str(kw.get("lexicon", "Mass")),
        descriptors=dict(kw.get("descriptors", {"shape": "irregular", "margin": "spiculated"})),  # type: ignore[call-overload]
        mask_path=_touch(root / "masks" / f"{image_id}_{finding_id}.png"),
    )


def _record(root: Path, image_id: str, *findings: Finding, case_id: str = "P0000", view: str = "CC") -> ImageRecord:
    return ImageRecord(
        image_id=image_id,
        case_id=case_id,
        image_path=_touch(root / "images" / f"{image_id}.png"),
        view=view,
        laterality=image_id.split("_")[1],
        findings=findings,
    )


@pytest.fixture
def records(tmp_path: Path) -> list[ImageRecord]:
    return [
        _record(
            tmp_path,
            "P0000_L_MLO",
            _finding(tmp_path, "P0000_L_MLO", "1", "malignant"),
            _finding(
                tmp_path,
                "P0000_L_MLO",
                "pectoral",
                None,
                concept="pectoral muscle",
                lexicon="Normal tissue / anatomy",
                descriptors={},
            ),
            view="MLO",
        ),
        _record(tmp_path, "P0000_R_CC"),
        _record(
            tmp_path,
            "P0001_L_CC",
            _finding(
                tmp_path,
                "P0001_L_CC",
                "1",
                "benign",
                concept="coarse popcorn calcifications",
                lexicon="Calcification",
                descriptors={"type": "coarse popcorn", "distribution": "clustered"},
            ),
            case_id="P0001",
        ),
    ]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_round_trip(tmp_path: Path, records: list[ImageRecord]) -> None:
    path = tmp_path / "manifest.csv"
    write_manifest(path, records)
    assert read_manifest(path) == records


def test_written_layout(tmp_path: Path, records: list[ImageRecord]) -> None:
    path = tmp_path / "manifest.csv"
    write_manifest(path, records)
    with path.open(newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == COLUMNS
    rows = _rows(path)
    assert len(rows) == 4  # two findings, one image without any, one finding
    assert rows[0]["image_path"] == "images/P0000_L_MLO.png"
    assert rows[0]["mask_path"] == "masks/P0000_L_MLO_1.png"
    assert rows[0]["descriptors"] == "shape=irregular;margin=spiculated"
    assert rows[1]["pathology"] == "" and rows[1]["concept"] == "pectoral muscle"
    blank = rows[2]
    assert blank["image_id"] == "P0000_R_CC"
    assert all(blank[c] == "" for c in COLUMNS[5:])


def test_paths_outside_the_folder_stay_absolute(tmp_path: Path, records: list[ImageRecord]) -> None:
    path = tmp_path / "sub" / "manifest.csv"
    write_manifest(path, records)
    assert _rows(path)[0]["image_path"] == str(records[0].image_path)
    assert read_manifest(path) == records


def test_absolute_paths_are_accepted(tmp_path: Path, records: list[ImageRecord]) -> None:
    path = tmp_path / "manifest.csv"
    write_manifest(path, records)
    rows = _rows(path)
    rows[0]["image_path"] = rows[1]["image_path"] = str(records[0].image_path)
    _write_rows(path, rows)
    assert read_manifest(path) == records


def test_labels(records: list[ImageRecord]) -> None:
    mlo, normal, benign = records
    assert mlo.pathology == "malignant"
    assert [f.finding_id for f in mlo.lesions] == ["1"]
    assert mlo.findings[0].is_lesion and not mlo.findings[1].is_lesion
    assert normal.pathology == "normal" and normal.lesions == ()
    assert benign.pathology == "benign"


def test_anatomy_only_image_is_normal(tmp_path: Path) -> None:
    skin = _finding(tmp_path, "P0002_R_CC", "skin", None, concept="skin line", descriptors={})
    assert _record(tmp_path, "P0002_R_CC", skin).pathology == "normal"


def test_descriptor_helpers() -> None:
    assert parse_descriptors(" type=fine pleomorphic ; distribution=clustered ") == {
        "type": "fine pleomorphic",
        "distribution": "clustered",
    }
    assert parse_descriptors("") == {}
    assert format_descriptors({"shape": "oval", "margin": "indistinct"}) == "shape=oval;margin=indistinct"
    with pytest.raises(ValueError, match="key=value, got 'oval'"):
        parse_descriptors("oval")
    with pytest.raises(ValueError, match="'shape' given twice"):
        parse_descriptors("shape=oval;shape=round")
    with pytest.raises(ValueError, match="cannot be written"):
        format_descriptors({"a;b": "c"})


@pytest.fixture
def written(tmp_path: Path, records: list[ImageRecord]) -> tuple[Path, list[dict[str, str]]]:
    path = tmp_path / "manifest.csv"
    write_manifest(path, records)
    return path, _rows(path)


def _expect_error(path: Path, *, line: int, column: str | None, words: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    error = info.value
    assert isinstance(error, ValueError)
    assert (error.line, error.column) == (line, column)
    message = str(error)
    assert str(path) in message and f"line {line}" in message
    if column is not None:
        assert f"column {column!r}" in message
    assert words in message, message
    return error


def test_error_missing_column(written: tuple[Path, list[dict[str, str]]]) -> None:
    path, rows = written
    _write_rows(path, rows, tuple(c for c in COLUMNS if c != "lexicon"))
    _expect_error(path, line=1, column="lexicon", words="header lacks columns ['lexicon']")


def test_error_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    path.write_text("")
    _expect_error(path, line=1, column=None, words="empty file")


def test_error_bad_pathology(written: tuple[Path, list[dict[str, str]]]) -> None:
    path, rows = written
    rows[3]["pathology"] = "BENIGN_WITHOUT_CALLBACK"
    _write_rows(path, rows)
    _expect_error(path, line=5, column="pathology", words="got 'BENIGN_WITHOUT_CALLBACK'")


def test_error_bad_laterality(written: tuple[Path, list[dict[str, str]]]) -> None:
    path, rows = written
    rows[2]["laterality"] = "left"
    _write_rows(path, rows)
    _expect_error(path, line=4, column="laterality", words="got 'left'")


def test_error_duplicate_finding_id(written: tuple[Path, list[dict[str, str]]]) -> None:
    path, rows = written
    rows[1]["finding_id"] = "1"
    _write_rows(path, rows)
    _expect_error(path, line=3, column="finding_id", words="duplicate finding id '1' in image 'P0000_L_MLO'")


@pytest.mark.parametrize(("column", "value"), [("case_id", "P0009"), ("view", "CC"), ("laterality", "R")])
def test_error_inconsistent_image(written: tuple[Path, list[dict[str, str]]], column: str, value: str) -> None:
    path, rows = written
    rows[1][column] = value
    _write_rows(path, rows)
    _expect_error(path, line=3, column=column, words=f"but {value!r} here")


@pytest.mark.parametrize(("column", "row"), [("image_path", 0), ("mask_path", 3)])
def test_error_missing_file(
    written: tuple[Path, list[dict[str, str]]], records: list[ImageRecord], column: str, row: int
) -> None:
    path, _ = written
    target = records[0].image_path if column == "image_path" else records[2].findings[0].mask_path
    target.unlink()
    _expect_error(path, line=row + 2, column=column, words=f"file not found: {target}")
    assert len(read_manifest(path, check_files=False)) == 3


def test_error_finding_without_id_or_mask(written: tuple[Path, list[dict[str, str]]]) -> None:
    path, rows = written
    rows[0]["finding_id"] = ""
    _write_rows(path, rows)
    _expect_error(path, line=2, column="finding_id", words="set without a finding_id")
    rows[0]["finding_id"] = "1"
    rows[0]["mask_path"] = ""
    _write_rows(path, rows)
    _expect_error(path, line=2, column="mask_path", words="finding '1' needs a mask_path")


def test_error_bad_descriptors(written: tuple[Path, list[dict[str, str]]]) -> None:
    path, rows = written
    rows[0]["descriptors"] = "irregular"
    _write_rows(path, rows)
    _expect_error(path, line=2, column="descriptors", words="got 'irregular'")


def test_error_blank_row_beside_findings(written: tuple[Path, list[dict[str, str]]]) -> None:
    path, rows = written
    blank = dict(rows[0], **{c: "" for c in COLUMNS[5:]})
    _write_rows(path, rows + [blank])
    _expect_error(path, line=6, column="finding_id", words="row without a finding besides")


def test_error_pickles(written: tuple[Path, list[dict[str, str]]]) -> None:
    path, rows = written
    rows[0]["pathology"] = "unknown"
    _write_rows(path, rows)
    error = _expect_error(path, line=2, column="pathology", words="got 'unknown'")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.line == 2


def test_writer_rejects_what_the_reader_would(tmp_path: Path, records: list[ImageRecord]) -> None:
    path = tmp_path / "manifest.csv"
    bad = records[0].findings[0]
    wrong = Finding(bad.finding_id, "BENIGN", bad.concept, bad.lexicon, bad.descriptors, bad.mask_path)
    twice = ImageRecord(**{**records[0].__dict__, "findings": (bad, bad)})
    for broken, words in (
        ([ImageRecord(**{**records[0].__dict__, "findings": (wrong,)})], "got 'BENIGN'"),
        ([twice], "finding id '1' is empty or repeated"),
        ([records[1], records[1]], "appears in two records"),
        ([ImageRecord(**{**records[1].__dict__, "laterality": "B"})], "got 'B'"),
    ):
        with pytest.raises(ManifestError, match=words):
            write_manifest(path, broken)
    assert not path.exists()
