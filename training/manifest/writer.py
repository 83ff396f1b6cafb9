"""Writing a manifest: atomically, paths relative to its folder, refusing what reading would refuse."""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from deepminer.auxiliary import COLUMN_PREFIX as AUX_PREFIX
from training.manifest.records import (
    COLUMNS,
    FINDING_COLUMNS,
    LATERALITIES,
    PATHOLOGIES,
    ImageRecord,
    ManifestError,
    format_descriptors,
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
            rows.append(head + [""] * len(FINDING_COLUMNS) + aux_cells)
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


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (a resolved folder) when it lies under it, else absolute.

    Only the folder part is resolved, so a symlinked file keeps its own name.
    """
    absolute = Path(os.path.abspath(path))
    for candidate in (absolute, absolute.parent.resolve() / absolute.name):
        if candidate.is_relative_to(base):
            return candidate.relative_to(base).as_posix()
    return absolute.as_posix()
