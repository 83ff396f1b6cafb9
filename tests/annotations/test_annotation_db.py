"""Engine set-up: URL handling and SQLite connection settings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from annotations import AnnotationStore, create_engine_from_url, init_db
from annotations.models import TABLE_NAME


@pytest.mark.parametrize("url", ["postgresql://u@db/x", "postgres://u@db/x", "postgresql+psycopg://u@db/x"])
def test_postgresql_urls_use_psycopg_3(url: str) -> None:
    engine = create_engine_from_url(url)
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg")


def test_other_databases_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unsupported database URL 'mysql://u:\*\*\*@db/x'"):
        create_engine_from_url("mysql://u:secret@db/x")


def test_sqlite_file_uses_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_engine_from_url(f"sqlite:///{tmp_path / 'a.db'}")
    init_db(engine)
    init_db(engine)  # idempotent
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    assert inspect(engine).has_table(TABLE_NAME)
    engine.dispose()


def test_in_memory_sqlite_is_one_database_for_all_threads() -> None:
    store = AnnotationStore("sqlite://")
    store.init_schema()
    worker = threading.Thread(
        target=store.add,
        kwargs={"unit_id": 1, "annotator": "a", "label": "x", "category": "Mass", "bundle_hash": "0" * 64},
    )
    worker.start()
    worker.join()
    assert store.count() == 1
    store.close()
