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

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from deepminer.imaging import ImageDecodeError
from training.ingest.cbis_csv import (
    LEXICON,
    PATHOLOGY_MAP,
    CbisRow,
    concept_name,
    find_description_csvs,
    read_description_csv,
)
from training.ingest.cbis_dicoms import dicom_shape, dicoms, find_roi_mask, full_image, index_folders
from training.manifest import Finding, ImageRecord, read_manifest, write_manifest

log = logging.getLogger(__name__)


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
    image_path = full_image(image_id, folders)
    if image_path is None:
        report.skipped.append(f"{first.source}: image folder {image_id!r} not found or holds no .dcm file")
        log.warning("%s", report.skipped[-1])
        return None
    try:
        shape = dicom_shape(image_path)
    except ImageDecodeError as exc:
        report.skipped.append(f"{first.source}: image {image_path} unreadable: {exc}")
        log.warning("%s", report.skipped[-1])
        return None
    findings: list[Finding] = []
    for row in rows:
        problem = _check_row(row, first, findings)
        mask = None
        if problem is None:
            candidates = [p for name in row.roi_folders if name in folders for p in dicoms(folders[name])]
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
                concept=concept_name(row),
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
