"""Alembic migrations of the unit-label store, on SQLite and PostgreSQL.

Head must create exactly what ``annotations/models.py`` defines (compared by
Alembic's autogenerate and by reflecting both schemas), upgrades must be
repeatable, and databases made by ``create_all`` must be adopted or refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text

from annotations import AnnotationStore, create_engine_from_url, init_db
from annotations.cli import main as cli
from annotations.migrate import MigrationError, connect, current, downgrade, head, schema_differences, stamp, upgrade
from annotations.models import TABLE_NAME

DatabaseFactory = Callable[[], str]
BUNDLE_HASH = "cd" * 32


def _engine(url: str) -> Engine:
    return create_engine_from_url(url)


def _table_names(url: str) -> set[str]:
    engine = _engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _reflected_schema(url: str) -> dict[str, Any]:
    """Everything the database says about the store's table, in a comparable form."""
    engine = _engine(url)
    try:
        inspector = inspect(engine)
        columns = [
            (c["name"], str(c["type"]), c["nullable"], c.get("autoincrement"))
            for c in inspector.get_columns(TABLE_NAME)
        ]
        return {
            "columns": columns,
            "primary_key": inspector.get_pk_constraint(TABLE_NAME),
            "unique": sorted(
                (u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(TABLE_NAME)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(TABLE_NAME)
            ),
            "checks": sorted(
                (c["name"], " ".join(c["sqltext"].split())) for c in inspector.get_check_constraints(TABLE_NAME)
            ),
        }
    finally:
        engine.dispose()


def _store_round_trip(url: str) -> None:
    store = AnnotationStore(url)
    try:
        record = store.add(
            unit_id=1814, annotator="dr_a", label="Spiculation", category="Mass", bundle_hash=BUNDLE_HASH
        )
        assert record.version == 1
        assert [r.label for r in store.latest(unit_id=1814)] == ["Spiculation"]
    finally:
        store.close()


def test_head_is_the_single_initial_revision() -> None:
    assert head() == "0001"


def test_upgrade_from_empty_creates_the_store_and_is_repeatable(new_database: DatabaseFactory) -> None:
    url = new_database()
    assert current(url) is None

    assert upgrade(url) == head()
    assert {TABLE_NAME, "alembic_version"} <= _table_names(url)
    assert upgrade(url) == head()  # a second run (every helm upgrade) changes nothing
    _store_round_trip(url)


def test_head_matches_the_models_by_autogenerate(new_database: DatabaseFactory) -> None:
    url = new_database()
    upgrade(url)
    with connect(url, lock=False) as connection:
        assert schema_differences(connection) == []


def test_head_matches_create_all_by_reflection(new_database: DatabaseFactory) -> None:
    """Autogenerate ignores CHECK constraints; reflecting both schemas does not."""
    migrated, created = new_database(), new_database()
    upgrade(migrated)
    engine = _engine(created)
    try:
        init_db(engine)
    finally:
        engine.dispose()
    assert _reflected_schema(migrated) == _reflected_schema(created)


def test_downgrade_to_base_and_upgrade_again(new_database: DatabaseFactory) -> None:
    url = new_database()
    upgrade(url)
    _store_round_trip(url)

    assert downgrade(url, "base") is None
    assert TABLE_NAME not in _table_names(url)

    assert upgrade(url) == head()
    _store_round_trip(url)


def test_unversioned_create_all_database_is_adopted_with_its_rows(new_database: DatabaseFactory) -> None:
    url = new_database()
    store = AnnotationStore(url)
    try:
        store.init_schema()  # what `python -m annotations init` and the service's start-up do
        store.add(
            unit_id=7,
            annotator="dr_b",
            label="Vascular calcifications",
            category="Calcification",
            bundle_hash=BUNDLE_HASH,
        )
    finally:
        store.close()
    assert current(url) is None

    assert upgrade(url) == head()

    store = AnnotationStore(url)
    try:
        assert [r.label for r in store.history(unit_id=7)] == ["Vascular calcifications"]
    finally:
        store.close()


def test_unversioned_database_that_differs_is_refused_untouched(new_database: DatabaseFactory) -> None:
    url = new_database()
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE {TABLE_NAME} (id INTEGER PRIMARY KEY, unit_id INTEGER NOT NULL)"))
    finally:
        engine.dispose()

    with pytest.raises(MigrationError, match=r"no recorded revision.*differ.*--stamp"):
        upgrade(url)
    assert "alembic_version" not in _table_names(url)


def test_stamp_records_a_revision_without_running_it(new_database: DatabaseFactory) -> None:
    url = new_database()
    assert stamp(url, "0001") == "0001"
    assert TABLE_NAME not in _table_names(url)


def test_unknown_revision_is_a_migration_error(new_database: DatabaseFactory) -> None:
    with pytest.raises(MigrationError, match=r"nope.*revisions up to 0001"):
        upgrade(new_database(), "nope")


def test_other_tables_in_the_database_are_left_alone(new_database: DatabaseFactory) -> None:
    url = new_database()
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
    finally:
        engine.dispose()
    upgrade(url)
    with connect(url, lock=False) as connection:
        assert schema_differences(connection) == []
    assert "someone_elses" in _table_names(url)


def test_cli_migrate_current_and_stamp(new_database: DatabaseFactory, capsys: pytest.CaptureFixture[str]) -> None:
    url = new_database()
    assert cli(["--db", url, "migrate", "--current"]) == 0
    assert capsys.readouterr().out.strip() == "database at revision none (head is 0001)"

    assert cli(["--db", url, "migrate"]) == 0
    assert capsys.readouterr().out.strip() == "database at revision 0001 (head)"

    assert cli(["--db", url, "migrate", "--revision", "nope"]) == 1
    assert "error: " in capsys.readouterr().err

    # The other commands find the migrated tables.
    assert cli(["--db", url, "list"]) == 0
    assert capsys.readouterr().out.strip() == "no annotations"


def test_cli_migrate_reports_an_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2"
    assert cli(["--db", url, "migrate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot migrate the database at postgresql+psycopg://nobody:***@127.0.0.1:1/none")
    assert "secret" not in err
