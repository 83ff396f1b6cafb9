"""Schema migrations of the unit-label store, with Alembic configured here (there is no ``alembic.ini``).

:func:`upgrade` brings a database to a revision (``head`` by default) and
:func:`current` says where it is; ``python -m annotations --db URL migrate``
runs them. Every run happens in one transaction, under a lock on PostgreSQL
(advisory) and SQLite (``BEGIN IMMEDIATE``), so migration jobs of concurrent
releases cannot interleave.

**Unversioned databases.** ``python -m annotations init`` and the service's
start-up create the tables with ``create_all`` and record no revision. Such a
database is *adopted*: when its table matches the models exactly, it is
stamped at head and nothing else changes. When it does not, :class:`MigrationError`
lists the differences and nothing is written; after a backup, stamp the
revision whose schema it has (``migrate --stamp --revision REV``), then upgrade.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from annotations.db import WRITER_OPTION, create_engine_from_url
from annotations.errors import AnnotationError
from annotations.models import Base

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
CONNECTION_ATTRIBUTE: Final = "connection"
"""Key of ``Config.attributes`` under which ``migrations/env.py`` finds the open connection."""

_LOCK_KEY: Final = 0x6D69_6772_6174_6521  # "migrate!": one migrator per PostgreSQL database at a time
_OPTIONS: Final[Mapping[str, Any]] = {"compare_type": True}


class MigrationError(AnnotationError):
    """The database cannot be brought to the requested revision; nothing was changed."""


def include_name(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    """Only the store's own tables take part in comparisons; other tables in the database are not ours."""
    return type_ != "table" or name in Base.metadata.tables


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the store's revisions, running on ``connection`` (for ``alembic.command``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes[CONNECTION_ATTRIBUTE] = connection
    return config


def head() -> str:
    """The newest revision this version of the code knows."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise MigrationError(f"the store's revisions must form one line, got heads {heads}")
    return heads[0]


@contextmanager
def connect(url: str, *, lock: bool = True) -> Iterator[Connection]:
    """A connection to ``url`` inside one transaction, holding the migration lock when ``lock``.

    The transaction commits when the block ends and rolls back on an error.
    """
    engine = create_engine_from_url(url)
    if lock:
        engine = engine.execution_options(**{WRITER_OPTION: True})  # SQLite: BEGIN IMMEDIATE
    try:
        with engine.begin() as connection:
            if lock and connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            yield connection
    except OperationalError as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        raise MigrationError(f"cannot migrate the database at {shown}: {exc.orig}") from exc
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None when it records none (empty or unversioned)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        return None  # connecting would create the file: asking must not leave an empty database behind
    with connect(url, lock=False) as connection:
        return _current(connection)


def upgrade(url: str, revision: str = "head") -> str | None:
    """Bring the database at ``url`` up to ``revision``, adopting an unversioned one first; return where it is."""
    with connect(url) as connection:
        _adopt_unversioned(connection)
        _run(command.upgrade, connection, revision)
        return _current(connection)


def downgrade(url: str, revision: str) -> str | None:
    """Take the database at ``url`` down to ``revision`` (``base`` drops the store's tables); return where it is."""
    with connect(url) as connection:
        _run(command.downgrade, connection, revision)
        return _current(connection)


def stamp(url: str, revision: str = "head") -> str | None:
    """Record ``revision`` as applied without running anything (for a schema already at it); return it."""
    with connect(url) as connection:
        _run(command.stamp, connection, revision)
        return _current(connection)


def schema_differences(connection: Connection) -> list[Any]:
    """Alembic's autogenerate diff between the database and the models; empty when they agree."""
    context = MigrationContext.configure(connection, opts={**_OPTIONS, "include_name": include_name})
    return list(compare_metadata(context, Base.metadata))


def _current(connection: Connection) -> str | None:
    heads = MigrationContext.configure(connection).get_current_heads()
    return ",".join(heads) if heads else None


def _adopt_unversioned(connection: Connection) -> None:
    """Stamp head on a database whose tables ``create_all`` made, if they match the models; else refuse."""
    if _current(connection) is not None:
        return
    existing = sorted(name for name in Base.metadata.tables if inspect(connection).has_table(name))
    if not existing:
        return  # empty: the upgrade creates everything
    differences = schema_differences(connection)
    if differences:
        listed = "; ".join(str(diff) for diff in differences[:10])
        raise MigrationError(
            f"the database has the store's table(s) {', '.join(existing)} but no recorded revision, and they "
            f"differ from this version's models ({len(differences)} difference(s): {listed}). Back it up, then "
            "record the revision its schema matches with `python -m annotations migrate --stamp --revision REV` "
            "and migrate again"
        )
    _run(command.stamp, connection, "head")


def _run(step: Any, connection: Connection, revision: str) -> None:
    try:
        step(alembic_config(connection), revision)
    except CommandError as exc:
        raise MigrationError(f"{exc} (this version knows revisions up to {head()})") from exc
