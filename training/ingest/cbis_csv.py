"""CBIS-DDSM's description CSVs: one abnormality per row, read into :class:`CbisRow` values.

The rules they follow are in :mod:`training.ingest.cbis_ddsm`.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

PATHOLOGY_MAP: dict[str, str] = {
    "MALIGNANT": "malignant",
    "BENIGN": "benign",
    "BENIGN_WITHOUT_CALLBACK": "benign",
}
LEXICON: dict[str, str] = {"mass": "Mass", "calcification": "Calcification"}
_MISSING = {"", "N/A", "NA", "NAN", "NONE", "NULL"}
_REQUIRED = (
    "patient id",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "pathology",
    "image file path",
    "roi mask file path",
)


@dataclass(frozen=True)
class CbisRow:
    """One abnormality row of a description CSV, values as published (stripped)."""

    source: str  # CSV file name and line, for messages
    split: str  # "train" | "test"
    patient_id: str
    side: str
    view: str
    abnormality_id: str
    abnormality_type: str
    pathology: str
    image_folder: str
    roi_folders: tuple[str, ...]  # folders of the ROI mask and the cropped image (often the same)
    descriptors: dict[str, str]


def find_description_csvs(root: Path) -> list[Path]:
    """``*case_description*.csv`` files in ``root`` and one folder below, sorted."""
    found = set(root.glob("*case_description*.csv")) | set(root.glob("*/*case_description*.csv"))
    return sorted(found)


def read_description_csv(path: Path) -> list[CbisRow]:
    """Parse one description CSV (mass or calc); column names are matched case- and ``_``/space-insensitively."""
    path = Path(path)
    split = "test" if "test" in path.name.lower() else "train"
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = {_column_key(name): name for name in reader.fieldnames or []}
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise ValueError(f"{path}: not a CBIS-DDSM description CSV, it lacks columns {missing}")
        rows = []
        for raw in reader:
            values = {key: _clean(raw.get(name)) for key, name in header.items()}
            rows.append(_row(values, source=f"{path.name}:{reader.line_num}", split=split))
    return rows


def _row(values: dict[str, str], *, source: str, split: str) -> CbisRow:
    kind = values.get("abnormality type", "").lower()
    breast = values.get("left or right breast", "")
    side = {"LEFT": "L", "RIGHT": "R"}.get(breast.upper(), breast)
    descriptors = {
        key: _descriptor_value(values.get(column, ""))
        for key, column in (
            ("shape", "mass shape"),
            ("margins", "mass margins"),
            ("calc_type", "calc type"),
            ("calc_distribution", "calc distribution"),
            ("assessment", "assessment"),
            ("subtlety", "subtlety"),
            ("breast_density", "breast density"),
        )
    }
    descriptors.update(
        abnormality_id=values.get("abnormality id", ""),
        cbis_pathology=values.get("pathology", ""),
        cbis_split=split,
    )
    return CbisRow(
        source=source,
        split=split,
        patient_id=values.get("patient id", ""),
        side=side,
        view=values.get("image view", "").upper(),
        abnormality_id=values.get("abnormality id", ""),
        abnormality_type=kind,
        pathology=values.get("pathology", "").upper(),
        image_folder=_first_component(values.get("image file path", "")),
        roi_folders=tuple(
            dict.fromkeys(
                f
                for f in (
                    _first_component(values.get("roi mask file path", "")),
                    _first_component(values.get("cropped image file path", "")),
                )
                if f
            )
        ),
        descriptors={k: v for k, v in descriptors.items() if v},
    )


def concept_name(row: CbisRow) -> str:
    d = row.descriptors
    if row.abnormality_type == "mass":
        text = " ".join(filter(None, [_words(d.get("shape", "")), "mass"]))
        margins = _words(d.get("margins", ""))
        return f"{text} with {margins} margins" if margins else text
    text = " ".join(filter(None, [_words(d.get("calc_type", "")), "calcifications"]))
    distribution = _words(d.get("calc_distribution", ""))
    return f"{text} with {distribution} distribution" if distribution else text


def _words(value: str) -> str:
    """``"PLEOMORPHIC-FINE_LINEAR_BRANCHING"`` → ``"pleomorphic fine linear branching"``."""
    return " ".join(re.split(r"[\s_\-]+", value.lower())).strip()


def _column_key(name: str | None) -> str:
    return re.sub(r"[\s_]+", " ", (name or "").strip().lower())


def _clean(value: object) -> str:
    text = str(value or "").strip().strip('"').strip()
    return "" if text.upper() in _MISSING else text


def _descriptor_value(value: str) -> str:
    # The manifest joins descriptors with ";" and "=", so neither may appear in a value.
    return value.replace(";", ",").replace("=", "-")


def _first_component(path: str) -> str:
    parts = [p for p in re.split(r"[\\/]+", path.strip()) if p]
    return parts[0] if parts else ""
