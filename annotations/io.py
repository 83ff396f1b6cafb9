"""Export and import of the unit-label table as CSV or JSON.

Columns (CSV) and keys (JSON) are the field names of :class:`AnnotationRecord`.
On import, ``id``, ``version`` and ``created_at`` are ignored, because every
imported row becomes a new version: history is never rewritten. In CSV,
booleans are ``true``/``false`` and an empty cell means "not given".

Unit ids are 0-based layer4 indices everywhere in this project. The paper and
the reference code number units from 1 (paper unit 1814 is index 1813 here);
``one_based`` converts such a file's ids on import, and only there, so nothing
stored or exported is ever 1-based.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Final, Literal

from annotations.errors import AnnotationValidationError
from annotations.models import Annotation
from annotations.records import AnnotationRecord, NewAnnotation
from annotations.store import AnnotationStore
from annotations.validation import check_unit_id

Format = Literal["csv", "json"]

COLUMNS: Final = tuple(column.name for column in Annotation.__table__.columns)
"""The table's columns, in its order: the fields of :class:`AnnotationRecord`."""
_INPUT_FIELDS: Final = frozenset(f.name for f in fields(NewAnnotation))
_ASSIGNED_BY_STORE: Final = frozenset(COLUMNS) - _INPUT_FIELDS
_REQUIRED: Final = ("unit_id", "annotator", "label", "category", "bundle_hash")
_INTEGER: Final = re.compile(r"[+-]?\d+")


def export_annotations(
    store: AnnotationStore, path: str | os.PathLike[str], *, fmt: Format | None = None, history: bool = False
) -> int:
    """Write the latest version per (unit, annotator), or every version with ``history``, to ``path``.

    ``fmt`` defaults to the suffix of ``path`` (``.csv`` or ``.json``). The file
    is replaced atomically. Returns the number of rows written.
    """
    target = Path(path)
    kind = _resolve_format(target, fmt)
    records = store.all_versions() if history else store.all_latest()
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            if kind == "csv":
                writer = csv.DictWriter(handle, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(_csv_row(record) for record in records)
            else:
                json.dump([_json_row(record) for record in records], handle, indent=2, ensure_ascii=False)
                handle.write("\n")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return len(records)


def import_annotations(
    store: AnnotationStore,
    path: str | os.PathLike[str],
    *,
    fmt: Format | None = None,
    bundle_hash: str | None = None,
    annotator: str | None = None,
    source: str | None = None,
    one_based: bool = False,
) -> int:
    """Append every row of ``path`` as a new version, in one transaction; return how many.

    ``bundle_hash``, ``annotator`` and ``source`` fill in rows that do not give
    them; ``one_based``: the file numbers units from 1 (module docstring). A
    bad row raises :class:`AnnotationValidationError` naming its row and
    field, and then nothing is written.
    """
    items = load_annotation_rows(
        path, fmt=fmt, bundle_hash=bundle_hash, annotator=annotator, source=source, one_based=one_based
    )
    return len(store.add_many(items))


def load_annotation_rows(
    path: str | os.PathLike[str],
    *,
    fmt: Format | None = None,
    bundle_hash: str | None = None,
    annotator: str | None = None,
    source: str | None = None,
    one_based: bool = False,
) -> list[NewAnnotation]:
    """Read and validate the rows of a CSV file or a JSON list of objects, writing nothing.

    Defaults as :func:`import_annotations`. With ``one_based`` every
    ``unit_id`` of the file is taken as 1-based and 1 is subtracted, and an id
    of 0 is refused. Raises :class:`AnnotationValidationError` with ``row``
    (1-based, header not counted) for a bad row, and ``ValueError`` for a file
    that is not a table.
    """
    source_path = Path(path)
    kind = _resolve_format(source_path, fmt)
    rows = _read_csv(source_path) if kind == "csv" else _read_json(source_path)
    defaults = {"bundle_hash": bundle_hash, "annotator": annotator, "source": source}
    items = []
    for number, row in enumerate(rows, start=1):
        try:
            items.append(_new_annotation(row, defaults=defaults, from_text=kind == "csv", one_based=one_based))
        except AnnotationValidationError as exc:
            raise exc.at_row(number) from None
    return items


def _resolve_format(path: Path, fmt: str | None) -> Format:
    if fmt is None:
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in ("csv", "json"):
            raise ValueError(
                f"cannot tell the format of {str(path)!r} from its suffix; name it .csv or .json, or pass fmt"
            )
    if fmt == "csv":
        return "csv"
    if fmt == "json":
        return "json"
    raise ValueError(f"fmt must be 'csv' or 'json', got {fmt!r}")


def _csv_row(record: AnnotationRecord) -> dict[str, str | int]:
    row: dict[str, str | int] = {}
    for name, value in _json_row(record).items():
        if value is None:
            row[name] = ""
        elif isinstance(value, bool):
            row[name] = "true" if value else "false"
        else:
            row[name] = value
    return row


def _json_row(record: AnnotationRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in COLUMNS}
    row["created_at"] = record.created_at.isoformat()
    return row


def _read_csv(path: Path) -> list[dict[str, Any]]:
    # utf-8-sig: spreadsheets often prefix a byte-order mark.
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        rows: list[dict[str, Any]] = []
        for number, row in enumerate(reader, start=1):
            if None in row:
                raise AnnotationValidationError("row", "has more cells than the header has columns", row=number)
            rows.append(dict(row))
        return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(  # noqa: TRY004 - the file's content is wrong, not an argument's type
            f"{str(path)!r} must hold a JSON list of annotation objects, got {type(data).__name__}"
        )
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise AnnotationValidationError("row", f"must be a JSON object, got {type(row).__name__}", row=number)
    return data


def _new_annotation(
    row: Mapping[str, Any], *, defaults: Mapping[str, str | None], from_text: bool, one_based: bool = False
) -> NewAnnotation:
    """One row as a NewAnnotation; empty text (CSV) and null (JSON) mean "not given"."""
    unknown = sorted(set(row) - _INPUT_FIELDS - _ASSIGNED_BY_STORE)
    if unknown:
        raise AnnotationValidationError(unknown[0], f"unknown column; expected some of {', '.join(COLUMNS)}")
    given: dict[str, Any] = {
        name: value
        for name, value in row.items()
        if name in _INPUT_FIELDS and value is not None and not (from_text and value == "" and name not in _REQUIRED)
    }
    for name, default in defaults.items():
        if default is not None and given.get(name, "") == "":
            given[name] = default
    if from_text and "recognizable" in given:
        given["recognizable"] = _parse_bool(given["recognizable"], field="recognizable")
    if given.get("recognizable") is False:
        given.setdefault("label", "")  # "not recognisable" names nothing
    for name in _REQUIRED:
        if name not in given:
            raise AnnotationValidationError(name, "missing")
    if from_text:
        given["unit_id"] = _parse_int(given["unit_id"], field="unit_id")
    if one_based:
        given["unit_id"] = _from_one_based(given["unit_id"])
    return NewAnnotation(**given)


def _from_one_based(value: object) -> int:
    """A 1-based unit number (as the paper and the reference code give them) as this project's 0-based index."""
    unit = check_unit_id(value)
    if unit == 0:
        raise AnnotationValidationError(
            "unit_id",
            "is 0, but with one_based (--one-based) units are numbered from 1: paper unit 1814 is index "
            "1813; a file with unit 0 is 0-based already, so import it without one_based",
        )
    return unit - 1


def _parse_int(text: str, *, field: str) -> int:
    if not _INTEGER.fullmatch(text.strip()):
        raise AnnotationValidationError(field, f"must be an integer, got {text!r}")
    return int(text)


def _parse_bool(text: str, *, field: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise AnnotationValidationError(field, f"must be 'true', 'false' or empty, got {text!r}")
    return value == "true"
