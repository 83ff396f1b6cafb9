"""CBIS-DDSM → manifest CSV.

Input, as published by TCIA, under one ``root`` folder:

- the four description CSVs (``mass_case_description_train_set.csv``,
  ``..._test_set.csv``, ``calc_case_description_train_set.csv``,
  ``..._test_set.csv``), found as ``*case_description*.csv`` in ``root`` or
  one folder below;
- the DICOM tree ``CBIS-DDSM/<Folder>/<date-ish>/<series-ish>/1-1.dcm`` (the
  ``<Folder>`` folders may also sit directly in ``root``).

The CSVs' file paths are relative and their lower parts do not match the
folders on disk, so only their first component is used: the folder name
(``Mass-Training_P_00001_LEFT_CC`` for the full mammogram,
``Mass-Training_P_00001_LEFT_CC_1`` for abnormality 1), searched for ``.dcm``
files. A full-image folder holds one DICOM (if several, the largest is taken).
An abnormality's folders hold its ROI mask and its cropped image, in no
reliable order or name, told apart thus:

1. the mask has the full mammogram's Rows x Columns (the crop is smaller);
2. when that does not single out one file (a mask of another size, as happens
   in the real data), the mask is the file whose pixels take at most two
   values (0 and its maximum: 0/255 or 0/1); a crop has many grey levels.

A finding whose mask cannot be found, or a row whose image cannot, is skipped
with a warning and counted in the :class:`IngestReport`; nothing is guessed.

Output: one manifest row per finding (an image with two abnormalities has two
rows). ``case_id`` is the patient id, so every image of a patient falls into
one split part (CBIS-DDSM's own train/test split is kept as the ``cbis_split``
descriptor, the pipeline makes its own 80/10/10 split by case). ``image_id``
is the full-image folder name. Pathology: MALIGNANT → malignant; BENIGN and
BENIGN_WITHOUT_CALLBACK → benign, the original kept as ``cbis_pathology``.
Lexicon "Mass" or "Calcification"; concept in lower-case words, e.g.
"irregular mass with spiculated margins", "pleomorphic calcifications with
clustered distribution". Descriptors keep shape, margins, calcification type
and distribution, assessment, subtlety, breast density, abnormality id,
original pathology and split. Masks stay DICOM files; the pipeline decodes them
(``deepminer.dicom``).

Normal images: CBIS-DDSM has none (DDSM's normal cases were not curated into
it). Bring them, or any other normal images, as a plain manifest with exactly
one row per image whose finding columns are empty::

    image_id,case_id,image_path,view,laterality,finding_id,pathology,concept,lexicon,descriptors,mask_path
    A_0002_1.LEFT_CC,normal_A_0002,normals/A_0002_1.LEFT_CC.png,CC,L,,,,,,

and pass it as ``normals`` (``--normals``); its records are appended to the
ingest output by :func:`merge_manifests`, and its paths are rewritten relative
to the new manifest.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deepminer.dicom import read_dicom_info
from deepminer.imaging import ImageDecodeError, read_image
from training.manifest import Finding, ImageRecord, read_manifest, write_manifest

log = logging.getLogger(__name__)

PATHOLOGY_MAP: dict[str, str] = {
    "MALIGNANT": "malignant",
    "BENIGN": "benign",
    "BENIGN_WITHOUT_CALLBACK": "benign",
}
LEXICON: dict[str, str] = {"mass": "Mass", "calcification": "Calcification"}
FOLDER_PATTERN = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$")
"""CBIS-DDSM folder names: full image, or ``_<abnormality id>`` for its ROI mask and crop."""
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


@dataclass
class IngestReport:
    """What an ingest wrote and what it skipped, and why."""

    manifest: Path
    images: int = 0
    findings: int = 0
    normals: int = 0
    pathologies: Counter[str] = field(default_factory=Counter)  # images by label: normal / benign / malignant
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.pathologies.items()))
        return (
            f"{self.manifest}: {self.images} images ({counts}; {self.normals} from the normals manifest), "
            f"{self.findings} findings; {len(self.skipped)} rows or findings skipped"
        )


def ingest_cbis_ddsm(
    root: Path,
    out: Path,
    *,
    normals: Path | None = None,
    csv_files: Sequence[Path] | None = None,
    progress: bool = True,
) -> IngestReport:
    """Write the manifest of the CBIS-DDSM copy under ``root`` to ``out`` (rules in the module docstring).

    ``csv_files`` overrides the CSV search; ``normals`` is a manifest merged
    into the output. Raises FileNotFoundError when no description CSV or no
    image is found, ValueError for a CSV without the published columns.
    """
    root = Path(root)
    files = list(csv_files) if csv_files is not None else find_description_csvs(root)
    if not files:
        raise FileNotFoundError(f"no CBIS-DDSM description CSV (*case_description*.csv) in {root} or its subfolders")
    rows = [row for path in files for row in read_description_csv(path)]
    folders = index_folders(root)
    report = IngestReport(manifest=Path(out))
    records = build_records(rows, folders, report=report, progress=progress)
    if not records:
        raise FileNotFoundError(
            f"none of the {len(rows)} CSV rows had its DICOM files under {root}; first problem: "
            f"{report.skipped[0] if report.skipped else 'no rows'}"
        )
    if normals is not None:
        before = len(records)
        records = merge_manifests(records, read_manifest(Path(normals)))
        report.normals = len(records) - before
    report.images = len(records)
    report.findings = sum(len(r.findings) for r in records)
    report.pathologies = Counter(r.pathology for r in records)
    write_manifest(Path(out), records)
    log.info("%s", report.summary())
    return report


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


def index_folders(root: Path) -> dict[str, Path]:
    """Map each CBIS-DDSM folder name under ``root`` to its path (the walk stops at those folders)."""
    index: dict[str, Path] = {}
    stack = [Path(root)]
    while stack:
        folder = stack.pop()
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc)
            continue
        for child in children:
            if FOLDER_PATTERN.match(child.name):
                index.setdefault(child.name, child)
            else:
                stack.append(child)
    return index


def build_records(
    rows: Iterable[CbisRow],
    folders: dict[str, Path],
    *,
    report: IngestReport,
    progress: bool = True,
) -> list[ImageRecord]:
    """Resolve every row to its image and mask DICOMs; one record per full image, in CSV order."""
    by_image: dict[str, list[CbisRow]] = {}
    for row in rows:
        by_image.setdefault(row.image_folder, []).append(row)
    records = []
    for image_id, image_rows in tqdm(by_image.items(), desc="CBIS-DDSM images", unit="img", disable=not progress):
        record = _image_record(image_id, image_rows, folders, report)
        if record is not None:
            records.append(record)
    return records


def find_roi_mask(candidates: Sequence[Path], image_shape: tuple[int, int]) -> Path | None:
    """The ROI mask among an abnormality's DICOMs (rule in the module docstring), or None."""
    full_size = [p for p in candidates if _safe_shape(p) == image_shape]
    if len(full_size) == 1:
        return full_size[0]
    pool = full_size or list(candidates)
    binary = [p for p in pool if _is_binary(p)]
    if len(binary) == 1:
        return binary[0]
    return None


def merge_manifests(records: Sequence[ImageRecord], extra: Sequence[ImageRecord]) -> list[ImageRecord]:
    """``records`` followed by ``extra``; ValueError when an image id appears in both."""
    ids = {r.image_id for r in records}
    clash = sorted(ids & {r.image_id for r in extra})
    if clash:
        raise ValueError(f"image ids in both manifests: {clash[:5]}{' ...' if len(clash) > 5 else ''}")
    with_lesions = sum(1 for r in extra if r.lesions)
    if with_lesions:
        log.warning("%d images of the merged manifest have lesions; kept as they are", with_lesions)
    return [*records, *extra]


def _image_record(
    image_id: str, rows: list[CbisRow], folders: dict[str, Path], report: IngestReport
) -> ImageRecord | None:
    first = rows[0]
    image_path = _full_image(image_id, folders)
    if image_path is None:
        report.skipped.append(f"{first.source}: image folder {image_id!r} not found or holds no .dcm file")
        log.warning("%s", report.skipped[-1])
        return None
    try:
        shape = _shape(image_path)
    except ImageDecodeError as exc:
        report.skipped.append(f"{first.source}: image {image_path} unreadable: {exc}")
        log.warning("%s", report.skipped[-1])
        return None
    findings: list[Finding] = []
    for row in rows:
        problem = _check_row(row, first, findings)
        mask = None
        if problem is None:
            candidates = [p for name in row.roi_folders if name in folders for p in _dicoms(folders[name])]
            mask = find_roi_mask(candidates, shape) if candidates else None
            if mask is None:
                problem = (
                    f"no ROI mask among {len(candidates)} DICOM files in {list(row.roi_folders)}"
                    if candidates
                    else f"ROI folders {list(row.roi_folders)} not found or empty"
                )
        if problem is not None or mask is None:
            report.skipped.append(f"{row.source}: {problem}")
            log.warning("%s", report.skipped[-1])
            continue
        findings.append(
            Finding(
                finding_id=row.abnormality_id,
                pathology=PATHOLOGY_MAP[row.pathology],
                concept=_concept(row),
                lexicon=LEXICON[row.abnormality_type],
                descriptors=row.descriptors,
                mask_path=mask,
            )
        )
    if not findings:
        return None
    return ImageRecord(
        image_id=image_id,
        case_id=first.patient_id,
        image_path=image_path,
        view=first.view,
        laterality=first.side,
        findings=tuple(findings),
    )


def _check_row(row: CbisRow, first: CbisRow, findings: Sequence[Finding]) -> str | None:
    """Why a row cannot become a finding, or None."""
    if row.pathology not in PATHOLOGY_MAP:
        return f"pathology {row.pathology!r} is not one of {sorted(PATHOLOGY_MAP)}"
    if row.abnormality_type not in LEXICON:
        return f"abnormality type {row.abnormality_type!r} is not one of {sorted(LEXICON)}"
    if row.side not in ("L", "R"):
        return f"left or right breast must be LEFT or RIGHT, got {row.side!r}"
    if (row.patient_id, row.side, row.view) != (first.patient_id, first.side, first.view):
        return f"patient/side/view differ from {first.source} for the same image {row.image_folder!r}"
    if not row.abnormality_id:
        return "empty abnormality id"
    if any(f.finding_id == row.abnormality_id for f in findings):
        return f"abnormality {row.abnormality_id} of {row.image_folder!r} given twice"
    return None


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


def _concept(row: CbisRow) -> str:
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


def _dicoms(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm") if p.is_file())


def _full_image(image_id: str, folders: dict[str, Path]) -> Path | None:
    folder = folders.get(image_id)
    files = _dicoms(folder) if folder is not None else []
    if len(files) > 1:
        log.warning("%s holds %d DICOM files; taking the largest image", folder, len(files))
        return max(files, key=_area)
    return files[0] if files else None


def _area(path: Path) -> int:
    shape = _safe_shape(path)
    return shape[0] * shape[1] if shape is not None else -1


def _safe_shape(path: Path) -> tuple[int, int] | None:
    try:
        return _shape(path)
    except ImageDecodeError as exc:
        log.warning("cannot read the DICOM header of %s: %s", path, exc)
        return None


def _shape(path: Path) -> tuple[int, int]:
    info = read_dicom_info(path)
    if info.rows is None or info.columns is None:
        raise ImageDecodeError(f"{path}: DICOM without Rows/Columns")
    return info.rows, info.columns


def _is_binary(path: Path) -> bool:
    try:
        values = np.unique(read_image(path))
    except ImageDecodeError as exc:
        log.warning("cannot decode %s: %s", path, exc)
        return False
    return len(values) <= 2 and values[0] == 0.0
