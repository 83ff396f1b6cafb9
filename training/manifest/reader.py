"""Reading a manifest: every row checked, errors naming file, line and column."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepminer.auxiliary import COLUMN_PREFIX as AUX_PREFIX
from training.manifest.records import (
    COLUMNS,
    FINDING_COLUMNS,
    LATERALITIES,
    PATHOLOGIES,
    Finding,
    ImageRecord,
    ManifestError,
    parse_descriptors,
)


def read_manifest(path: Path, *, check_files: bool = True) -> list[ImageRecord]:
    """Read and validate a manifest; images come in order of first appearance.

    Paths in the result are absolute. With ``check_files`` (the default) every
    image and mask file must exist. Raises :class:`ManifestError` (a ValueError)
    naming the file, line and column for: a missing header or column, an empty
    required value, a bad laterality or pathology, malformed descriptors, a
    duplicate finding id within an image, an image id whose case / path / view /
    laterality differ between rows, a second row for an image without findings,
    and missing files; for ``aux:<name>`` columns, an empty, non-numeric or
    non-finite value and a case whose rows disagree.
    """
    path = Path(path)
    base = path.parent.resolve()
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot open manifest: {exc}", path=path) from exc
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        if header is None:
            raise ManifestError("empty file, expected a header row", path=path, line=1)
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ManifestError(
                f"header lacks columns {missing}, got {list(header)}",
                path=path,
                line=1,
                column=missing[0],
            )
        aux_columns = [c for c in header if c.startswith(AUX_PREFIX)]
        for column in aux_columns:
            if not column[len(AUX_PREFIX) :].strip() or aux_columns.count(column) > 1:
                raise ManifestError(
                    "auxiliary columns need a unique name after 'aux:'", path=path, line=1, column=column
                )
        images: dict[str, _ImageEntry] = {}
        cases: dict[str, tuple[dict[str, float], int]] = {}
        for row in reader:
            try:
                aux = _aux_values(row, reader.line_num, aux_columns, cases)
                _add_row(row, reader.line_num, images, base=base, check_files=check_files, aux=aux)
            except _RowError as exc:
                raise ManifestError(exc.message, path=path, line=reader.line_num, column=exc.column) from None
    return [entry.record(image_id) for image_id, entry in images.items()]


class _RowError(Exception):
    """A problem with one row; :func:`read_manifest` adds the file and line."""

    def __init__(self, message: str, column: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.column = column


@dataclass
class _ImageEntry:
    """An image being assembled from its rows."""

    case_id: str
    image_path: Path
    view: str
    laterality: str
    line: int  # first line of the image, for messages about disagreeing rows
    findings: list[Finding]
    blank: bool = False  # has its single "no finding" row
    aux: dict[str, float] = field(default_factory=dict)

    def record(self, image_id: str) -> ImageRecord:
        return ImageRecord(
            image_id=image_id,
            case_id=self.case_id,
            image_path=self.image_path,
            view=self.view,
            laterality=self.laterality,
            findings=tuple(self.findings),
            aux=dict(self.aux),
        )


def _aux_values(
    row: dict[str | None, str | list[str] | None],
    line: int,
    columns: Sequence[str],
    cases: dict[str, tuple[dict[str, float], int]],
) -> dict[str, float]:
    """The row's ``aux:<name>`` values by name, checked against the case's earlier rows; raises :class:`_RowError`."""
    values: dict[str, float] = {}
    for column in columns:
        text = str(row.get(column) or "").strip()
        if not text:
            raise _RowError(
                "empty auxiliary value; every row needs its case's value (a missing value is not 0)", column
            )
        try:
            value = float(text)
        except ValueError:
            raise _RowError(f"auxiliary value must be a number, got {text!r}", column) from None
        if not math.isfinite(value):
            raise _RowError(f"auxiliary value must be finite, got {text!r}", column)
        values[column[len(AUX_PREFIX) :]] = value
    case_id = str(row.get("case_id") or "").strip()
    if columns and case_id:
        seen = cases.setdefault(case_id, (values, line))
        for name, value in values.items():
            if seen[0][name] != value:
                raise _RowError(
                    f"case {case_id!r} has {AUX_PREFIX}{name} {seen[0][name]!r} on line {seen[1]} but {value!r} here; "
                    "auxiliary features are per case",
                    AUX_PREFIX + name,
                )
    return values


def _add_row(
    row: dict[str | None, str | list[str] | None],
    line: int,
    images: dict[str, _ImageEntry],
    *,
    base: Path,
    check_files: bool,
    aux: dict[str, float] | None = None,
) -> None:
    """Validate one CSV row and merge it into ``images``; raises :class:`_RowError`."""
    if row.get(None):
        raise _RowError(f"row has more fields than the header, extra: {row[None]!r}", None)
    values = {c: str(row.get(c) or "").strip() for c in COLUMNS}
    for column in ("image_id", "case_id", "image_path", "view", "laterality"):
        if not values[column]:
            raise _RowError("empty value, every row needs one", column)
    if values["laterality"] not in LATERALITIES:
        raise _RowError(f"laterality must be one of {LATERALITIES}, got {values['laterality']!r}", "laterality")

    image_id = values["image_id"]
    image_path = _absolute(values["image_path"], base)
    entry = images.get(image_id)
    if entry is None:
        if check_files and not image_path.is_file():
            raise _RowError(f"image file not found: {image_path}", "image_path")
        entry = _ImageEntry(
            case_id=values["case_id"],
            image_path=image_path,
            view=values["view"],
            laterality=values["laterality"],
            line=line,
            findings=[],
            aux=dict(aux or {}),
        )
        images[image_id] = entry
    else:
        for column, before, now in (
            ("case_id", entry.case_id, values["case_id"]),
            ("image_path", str(entry.image_path), str(image_path)),
            ("view", entry.view, values["view"]),
            ("laterality", entry.laterality, values["laterality"]),
        ):
            if before != now:
                raise _RowError(
                    f"image {image_id!r} has {column} {before!r} on line {entry.line} but {now!r} here",
                    column,
                )

    finding_id = values["finding_id"]
    if not finding_id:
        stray = [c for c in FINDING_COLUMNS if values[c]]
        if stray:
            raise _RowError(f"finding columns {stray} set without a finding_id", "finding_id")
        if entry.findings or entry.blank:
            raise _RowError(
                f"image {image_id!r} has a row without a finding besides its other rows",
                "finding_id",
            )
        entry.blank = True
        return
    if entry.blank:
        raise _RowError(
            f"image {image_id!r} already has a row without a finding (line {entry.line})",
            "finding_id",
        )
    if any(f.finding_id == finding_id for f in entry.findings):
        raise _RowError(f"duplicate finding id {finding_id!r} in image {image_id!r}", "finding_id")
    pathology = values["pathology"] or None
    if pathology is not None and pathology not in PATHOLOGIES:
        raise _RowError(f"pathology must be one of {PATHOLOGIES} or empty, got {pathology!r}", "pathology")
    for column in ("concept", "mask_path"):
        if not values[column]:
            raise _RowError(f"finding {finding_id!r} needs a {column}", column)
    try:
        descriptors = parse_descriptors(values["descriptors"])
    except ValueError as exc:
        raise _RowError(str(exc), "descriptors") from None
    mask_path = _absolute(values["mask_path"], base)
    if check_files and not mask_path.is_file():
        raise _RowError(f"mask file not found: {mask_path}", "mask_path")
    entry.findings.append(
        Finding(
            finding_id=finding_id,
            pathology=pathology,
            concept=values["concept"],
            lexicon=values["lexicon"],
            descriptors=descriptors,
            mask_path=mask_path,
        )
    )


def _absolute(text: str, base: Path) -> Path:
    """A manifest path made absolute against the manifest's folder."""
    candidate = Path(text)
    return candidate if candidate.is_absolute() else base / candidate
