"""Command line of the unit-label store: ``python -m annotations --db URL COMMAND``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Final

from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from annotations.errors import AnnotationError
from annotations.io import COLUMNS, export_annotations, import_annotations
from annotations.migrate import current, head, stamp, upgrade
from annotations.models import TABLE_NAME
from annotations.records import AnnotationRecord
from annotations.store import AnnotationStore

DATABASE_URL_ENV: Final = "DEEPMINER_DATABASE_URL"
DEFAULT_DATABASE_URL: Final = "sqlite:///./deepminer.db"

_TABLE_COLUMNS: Final = ("unit_id", "version", "annotator", "source", "category", "cancer_association", "label")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with help for every command."""
    parser = argparse.ArgumentParser(
        prog="python -m annotations",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "The DeepMiner unit-label store: the names experts (and automatic procedures) give to\n"
            "units of the CNN's layer4. Unit ids are 0-based integers. Every version is kept;\n"
            "nothing is ever overwritten or deleted."
        ),
        epilog=(
            "examples:\n"
            "  python -m annotations --db sqlite:///./deepminer.db init\n"
            "  python -m annotations --db postgresql://deepminer@db/deepminer migrate\n"
            "  python -m annotations import labels.csv --annotator dr_a --bundle-hash SHA256\n"
            "  python -m annotations import paper_labels.csv --one-based --bundle-hash SHA256\n"
            "  python -m annotations list --unit 1814 --unit 1152\n"
            "  python -m annotations export labels.json --history\n"
            "\n"
            "run 'python -m annotations COMMAND --help' for a command's options."
        ),
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        default=os.environ.get(DATABASE_URL_ENV, DEFAULT_DATABASE_URL),
        help=f"database URL, sqlite:///PATH or postgresql://USER@HOST/DB (default: ${DATABASE_URL_ENV}, "
        f"else {DEFAULT_DATABASE_URL})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "init", help="create the tables where missing (safe to repeat)", description="Create the tables."
    )

    migrator = commands.add_parser(
        "migrate",
        help="bring the tables to the latest schema revision (safe to repeat)",
        description=(
            "Apply the schema revisions (Alembic) up to --revision. A database whose tables `init` or the "
            "service made is adopted when they match the models; otherwise nothing is changed and the "
            "differences are listed."
        ),
    )
    migrator.add_argument("--revision", default="head", help="target revision (default: head, the newest)")
    mode = migrator.add_mutually_exclusive_group()
    mode.add_argument("--current", action="store_true", help="print the database's revision; change nothing")
    mode.add_argument(
        "--stamp", action="store_true", help="record --revision as applied without running it (after a backup)"
    )

    importer = commands.add_parser(
        "import",
        help="append the rows of a CSV or JSON file as new versions",
        description=(
            "Append every row as a new version, all in one transaction: a bad row is reported with its "
            f"number and field, and then nothing is written. Columns: {', '.join(COLUMNS)} "
            "(id, version and created_at are ignored)."
        ),
    )
    importer.add_argument("path", type=Path, help="a .csv file or a .json list of objects")
    importer.add_argument("--format", choices=("csv", "json"), help="file format (default: from the suffix)")
    importer.add_argument("--annotator", help="annotator for rows that name none")
    importer.add_argument("--bundle-hash", metavar="SHA256", help="model bundle hash for rows that give none")
    importer.add_argument("--source", choices=("expert", "automatic"), help="source for rows that give none")
    importer.add_argument(
        "--one-based",
        action="store_true",
        help="the file numbers units from 1, as the paper and its reference code do (paper unit 1814 is our 1813): "
        "1 is subtracted on import, and unit 0 is refused",
    )

    exporter = commands.add_parser(
        "export",
        help="write the latest labels (or every version) to CSV or JSON",
        description="Write the latest version per unit and annotator, or every version with --history.",
    )
    exporter.add_argument("path", type=Path, help="output file, .csv or .json (replaced atomically)")
    exporter.add_argument("--format", choices=("csv", "json"), help="file format (default: from the suffix)")
    exporter.add_argument("--history", action="store_true", help="write every version, oldest first")

    history = commands.add_parser(
        "history", help="show every version of one unit's labels", description="Every version, oldest first."
    )
    history.add_argument("unit_id", type=int, help="0-based layer4 unit index")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")

    lister = commands.add_parser(
        "list",
        help="show the latest label per annotator",
        description="The latest version per unit and annotator, for every unit or the ones given.",
    )
    lister.add_argument("--unit", type=int, action="append", metavar="UNIT_ID", help="only this unit (repeatable)")
    lister.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status (0 done, 1 failed, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    if args.command == "migrate":
        return _migrate(args)
    try:
        store = _open_store(args.db, create=args.command in ("init", "import"))
    except AnnotationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(store, args)
    except (AnnotationError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _run(store: AnnotationStore, args: argparse.Namespace) -> int:
    if args.command == "init":
        print(f"ready: {store!r}")
    elif args.command == "import":
        count = import_annotations(
            store,
            args.path,
            fmt=args.format,
            bundle_hash=args.bundle_hash,
            annotator=args.annotator,
            source=args.source,
            one_based=args.one_based,
        )
        numbering = " (1-based ids, stored 0-based)" if args.one_based else ""
        print(f"imported {count} annotation(s) from {args.path}{numbering}")
    elif args.command == "export":
        count = export_annotations(store, args.path, fmt=args.format, history=args.history)
        print(f"exported {count} annotation(s) to {args.path}")
    elif args.command == "history":
        _print_records(store.history(unit_id=args.unit_id), as_json=args.json)
    else:
        if args.unit:
            by_unit = store.latest_for_units(unit_ids=args.unit)
            records = [record for unit_id in by_unit for record in by_unit[unit_id]]
        else:
            records = store.all_latest()
        _print_records(records, as_json=args.json)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    """``migrate``: works on the schema itself, so it needs no store (and no tables) to start from."""
    try:
        if args.current:
            revision = current(args.db)
        elif args.stamp:
            revision = stamp(args.db, args.revision)
        else:
            revision = upgrade(args.db, args.revision)
    except (AnnotationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    latest = head()
    state = "head" if revision == latest else f"head is {latest}"
    print(f"database at revision {revision or 'none'} ({state})")
    return 0


def _open_store(url: str, *, create: bool) -> AnnotationStore:
    """The store at ``url``; its tables are created when ``create``, else they must exist."""
    parsed = make_url(url)
    is_sqlite_file = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    # Connecting would create the file: a mistyped path must not leave an empty database behind.
    if not create and is_sqlite_file and not Path(str(parsed.database)).exists():
        raise AnnotationError(
            f"no database file {parsed.database!r}; run `python -m annotations --db {url} init` first"
        )
    store = AnnotationStore(url)
    if create:
        store.init_schema()
    elif not inspect(store.engine).has_table(TABLE_NAME):
        store.close()
        raise AnnotationError(f"{store!r} has no {TABLE_NAME} table; run `python -m annotations --db URL init` first")
    return store


def _print_records(records: list[AnnotationRecord], *, as_json: bool) -> None:
    if as_json:
        rows = [{**asdict(record), "created_at": record.created_at.isoformat()} for record in records]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not records:
        print("no annotations")
        return
    header = (*_TABLE_COLUMNS, "created_at")
    table = [
        [str(getattr(record, name)) for name in _TABLE_COLUMNS] + [f"{record.created_at:%Y-%m-%d %H:%M:%S}Z"]
        for record in records
    ]
    widths = [max(len(header[i]), *(len(row[i]) for row in table)) for i in range(len(header))]
    for row in (list(header), *table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
