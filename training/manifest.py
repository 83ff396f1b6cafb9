"""The manifest CSV: how every data set (phantom, CBIS-DDSM, custom) is described.

One row per (image, finding). An image with no finding and no concept mask has
exactly one row whose finding columns are empty. Columns, in this order::

    image_id, case_id, image_path, view, laterality,
    finding_id, pathology, concept, lexicon, descriptors, mask_path

- ``image_path`` / ``mask_path``: relative to the manifest's folder (absolute
  paths are accepted on read; the writer makes paths under the folder relative).
- ``view``: CC | MLO (other strings are kept as they are); ``laterality``: L | R.
- ``pathology``: ``benign`` | ``malignant`` for lesions, empty for concept-only
  masks (anatomy such as "pectoral muscle"). An image without a benign or
  malignant row is a normal image.
- ``concept``: human-readable concept name; ``lexicon``: BI-RADS lexicon category
  ("Mass", "Calcification", "Normal tissue / anatomy", ...).
- ``descriptors``: ``key=value`` pairs joined by ``;``.
- ``finding_id``: unique within the image.

Optional columns ``aux:<name>`` (after the others) carry auxiliary per-case
features such as ``aux:age`` (``deepminer.auxiliary``): a number on every row,
the same on every row of a case. Other extra columns are ignored.

Reading checks everything above and raises :class:`ManifestError` naming the
file, the line and the column, so a broken data set fails before training.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deepminer.auxiliary import COLUMN_PREFIX as AUX_PREFIX

COLUMNS: tuple[str, ...] = (
    "image_id",
    "case_id",
    "image_path",
    "view",
    "laterality",
    "finding_id",
    "pathology",
    "concept",
    "lexicon",
    "descriptors",
    "mask_path",
)
PATHOLOGIES: tuple[str, ...] = ("benign", "malignant")
LATERALITIES: tuple[str, ...] = ("L", "R")
# Columns that are all empty on the single row of an image without findings.
_FINDING_COLUMNS: tuple[str, ...] = COLUMNS[5:]


class ManifestError(ValueError):
    """A manifest that breaks the contract; the message names file, line and column."""

    def __init__(self, message: str, *, path: Path, line: int | None = None, column: str | None = None) -> None:
        where = str(path)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.message = message
        self.path = path
        self.line = line
        self.column = column

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments defeat the default exception pickling (process pools).
        return (_rebuild_error, (self.message, self.path, self.line, self.column))


def _rebuild_error(message: str, path: Path, line: int | None, column: str | None) -> ManifestError:
    return ManifestError(message, path=path, line=line, column=column)


@dataclass(frozen=True)
class Finding:
    """One mask of an image: a lesion (with pathology) or a concept-only mask."""

    finding_id: str
    pathology: str | None  # "benign" | "malignant" | None (concept-only mask)
    concept: str
    lexicon: str
    descriptors: dict[str, str]
    mask_path: Path  # absolute

    @property
    def is_lesion(self) -> bool:
        """True for benign or malignant findings, False for concept-only masks."""
        return self.pathology is not None


@dataclass(frozen=True)
class ImageRecord:
    """One mammogram with all its findings (lesions and concept masks)."""

    image_id: str
    case_id: str
    image_path: Path  # absolute
    view: str
    laterality: str
    findings: tuple[Finding, ...]
    aux: Mapping[str, float] = field(default_factory=dict)  # the case's auxiliary features, by name

    @property
    def lesions(self) -> tuple[Finding, ...]:
        """The findings that carry a pathology, in manifest order."""
        return tuple(f for f in self.findings if f.is_lesion)

    @property
    def pathology(self) -> str:
        """Image label: "malignant" if any malignant lesion, elif "benign", else "normal"."""
        found = {f.pathology for f in self.lesions}
        if "malignant" in found:
            return "malignant"
        if "benign" in found:
            return "benign"
        return "normal"


def parse_descriptors(text: str) -> dict[str, str]:
    """Parse ``"k1=v1;k2=v2"`` into a dict; raises ValueError on a malformed item."""
    result: dict[str, str] = {}
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"descriptor items must be key=value, got {item!r}")
        if key in result:
            raise ValueError(f"descriptor key {key!r} given twice in {text!r}")
        result[key] = value
    return result


def format_descriptors(descriptors: dict[str, str]) -> str:
    """Inverse of :func:`parse_descriptors`; raises ValueError on keys/values it could not round-trip."""
    parts = []
    for key, value in descriptors.items():
        if not key or any(c in key for c in ";=") or ";" in value or key != key.strip():
            raise ValueError(f"descriptor {key!r}={value!r} cannot be written as key=value;...")
        parts.append(f"{key}={value}")
    return ";".join(parts)


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
        stray = [c for c in _FINDING_COLUMNS if values[c]]
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


def write_manifest(path: Path, records: Sequence[ImageRecord]) -> None:
    """Write ``records`` to ``path`` (atomically), in the column order of :data:`COLUMNS`.

    Paths under the manifest's folder are written relative to it (POSIX
    separators), others absolute. Auxiliary features become ``aux:<name>``
    columns after the others. Raises :class:`ManifestError` for records that
    :func:`read_manifest` would reject (bad pathology or laterality, duplicate
    image or finding ids, unwritable descriptors, auxiliary features missing
    on some records, non-finite or differing within a case).
    """
    path = Path(path)
    base = path.parent.resolve()
    seen: set[str] = set()
    rows: list[list[str]] = []
    aux_names = list(dict.fromkeys(name for record in records for name in record.aux))
    case_aux: dict[str, Mapping[str, float]] = {}
    for record in records:
        if set(record.aux) != set(aux_names) or not all(math.isfinite(v) for v in record.aux.values()):
            raise ManifestError(
                f"image {record.image_id!r}: auxiliary features must be finite numbers for every image "
                f"({aux_names}), got {dict(record.aux)}",
                path=path,
            )
        if dict(case_aux.setdefault(record.case_id, record.aux)) != dict(record.aux):
            raise ManifestError(
                f"image {record.image_id!r}: auxiliary features {dict(record.aux)} differ from those of another "
                f"image of case {record.case_id!r}, {dict(case_aux[record.case_id])}",
                path=path,
            )
        aux_cells = [repr(float(record.aux[name])) for name in aux_names]
        if record.image_id in seen:
            raise ManifestError(f"image id {record.image_id!r} appears in two records", path=path)
        seen.add(record.image_id)
        if record.laterality not in LATERALITIES:
            raise ManifestError(
                f"image {record.image_id!r}: laterality must be one of {LATERALITIES}, got {record.laterality!r}",
                path=path,
            )
        head = [
            record.image_id,
            record.case_id,
            _relative(record.image_path, base),
            record.view,
            record.laterality,
        ]
        if not record.findings:
            rows.append(head + [""] * len(_FINDING_COLUMNS) + aux_cells)
        ids: set[str] = set()
        for finding in record.findings:
            if finding.finding_id in ids or not finding.finding_id:
                raise ManifestError(
                    f"image {record.image_id!r}: finding id {finding.finding_id!r} is empty or repeated",
                    path=path,
                )
            ids.add(finding.finding_id)
            if finding.pathology is not None and finding.pathology not in PATHOLOGIES:
                raise ManifestError(
                    f"image {record.image_id!r}: pathology must be one of {PATHOLOGIES} or None, "
                    f"got {finding.pathology!r}",
                    path=path,
                )
            try:
                descriptors = format_descriptors(finding.descriptors)
            except ValueError as exc:
                raise ManifestError(f"image {record.image_id!r}: {exc}", path=path) from exc
            rows.append(
                head
                + [
                    finding.finding_id,
                    finding.pathology or "",
                    finding.concept,
                    finding.lexicon,
                    descriptors,
                    _relative(finding.mask_path, base),
                ]
                + aux_cells
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a reader never sees half a manifest.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([*COLUMNS, *(AUX_PREFIX + name for name in aux_names)])
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _absolute(text: str, base: Path) -> Path:
    """A manifest path made absolute against the manifest's folder."""
    candidate = Path(text)
    return candidate if candidate.is_absolute() else base / candidate


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (a resolved folder) when it lies under it, else absolute.

    Only the folder part is resolved, so a symlinked file keeps its own name.
    """
    absolute = Path(os.path.abspath(path))
    for candidate in (absolute, absolute.parent.resolve() / absolute.name):
        if candidate.is_relative_to(base):
            return candidate.relative_to(base).as_posix()
    return absolute.as_posix()
