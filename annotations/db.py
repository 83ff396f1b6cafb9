"""Engines, schema creation and sessions for the unit-label store.

Writers are serialised by the database, so that computing "the next version"
and inserting it cannot interleave with another writer:

- SQLite: a writer transaction starts with ``BEGIN IMMEDIATE`` (the engine's
  ``begin`` hook reads :data:`WRITER_OPTION`), which takes the write lock
  before the version is read; other writers wait up to the busy timeout.
- PostgreSQL: :func:`lock_writers` takes ``SHARE ROW EXCLUSIVE`` on the table,
  which conflicts only with itself and other writes, never with readers.

Annotations arrive at expert pace (about 30 s each), so one writer at a time
costs nothing, and unlike optimistic retries alone it cannot starve a writer.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from annotations.models import Annotation, Base

WRITER_OPTION: Final = "deepminer_annotations_writer"
"""Execution option marking a connection whose transactions write (see module docstring)."""

SQLITE_BUSY_TIMEOUT_S: Final = 30.0
_INIT_LOCK_KEY: Final = 0x6465_6570_6D69_6E65  # "deepmine": serialises concurrent init_db() calls on PostgreSQL
_SQLITE_FULL: Final = 13  # the primary result code SQLITE_FULL (sqlite3.SQLITE_FULL from Python 3.11)
_POSTGRES_DISK_FULL: Final = "53100"


def create_engine_from_url(url: str) -> Engine:
    """An engine for ``url``: ``sqlite:///path``, ``sqlite://`` (in memory) or ``postgresql[+psycopg]://``.

    SQLite connections use WAL, foreign keys and a busy timeout, may be shared
    across threads, and leave BEGIN to SQLAlchemy so that SELECTs are
    transactional too. An in-memory database is one connection shared by all
    threads: fine for tests, not for concurrent writers. ``postgresql://`` and
    ``postgres://`` are rewritten to the psycopg 3 driver; query parameters
    (``?options=-csearch_path%3Dschema``) reach the driver unchanged.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    raise ValueError(
        f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}: use sqlite or postgresql"
    )


def init_db(engine: Engine) -> None:
    """Create the store's tables and indexes where they are missing; safe to call from several processes."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INIT_LOCK_KEY})
        Base.metadata.create_all(conn)


def session_factory(engine: Engine, *, writer: bool = False) -> sessionmaker[Session]:
    """Sessions on ``engine`` whose objects stay readable after commit.

    With ``writer=True`` each transaction takes SQLite's write lock at BEGIN;
    call :func:`lock_writers` first thing in the transaction for PostgreSQL.
    """
    bind = engine.execution_options(**{WRITER_OPTION: True}) if writer else engine
    return sessionmaker(bind=bind, expire_on_commit=False)


def lock_writers(session: Session) -> None:
    """Start ``session``'s transaction holding the writer lock; other writers wait until it ends.

    ``session`` must come from ``session_factory(engine, writer=True)``. On
    SQLite the lock is taken by the ``BEGIN IMMEDIATE`` this emits; on
    PostgreSQL by locking the table.
    """
    connection = session.connection()  # emits BEGIN now, not at the first query
    if connection.dialect.name == "postgresql":
        table = connection.dialect.identifier_preparer.format_table(Annotation.__table__)
        connection.execute(text(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))


def is_disk_full(exc: DBAPIError) -> bool:
    """Whether the database refused a write for want of disk space: SQLite's ``SQLITE_FULL`` or PostgreSQL's
    ``disk_full`` (SQLSTATE 53100)."""
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        # sqlite_errorcode exists from Python 3.11; before, only the message tells.
        code = getattr(orig, "sqlite_errorcode", None)
        return code == _SQLITE_FULL if code is not None else "database or disk is full" in str(orig)
    return getattr(orig, "sqlstate", None) == _POSTGRES_DISK_FULL


def _sqlite_engine(url: URL) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}}
    if in_memory:
        options["poolclass"] = StaticPool
    engine = create_engine(url, **options)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # sqlite3's legacy mode starts no transaction for SELECT, so a version read
    # would not be isolated from the insert that follows; SQLAlchemy emits BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    finally:
        cursor.close()


def _begin_sqlite_transaction(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get(WRITER_OPTION) else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")
