"""The unit-label store: append-only, versioned annotations behind a small typed API."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any, Final

from sqlalchemy import ColumnElement, Engine, and_, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from annotations import lexicon
from annotations.db import create_engine_from_url, init_db, is_disk_full, lock_writers, session_factory
from annotations.errors import AnnotationConflictError, StoreFullError, StoreUnavailableError
from annotations.models import TABLE_NAME, Annotation
from annotations.records import AnnotationRecord, NewAnnotation, record_values
from annotations.validation import check_sha256, check_text, check_unit_id

_IN_CHUNK: Final = 500  # bound parameters per IN list; old SQLite builds allow 999

VersionKey = tuple[int, str]
"""(unit_id, annotator): the sequence a version number counts in."""

Precondition = Callable[[Mapping[int, list[AnnotationRecord]]], None]
"""Called inside a write transaction with :meth:`AnnotationStore.latest_for_units` of the batch's units."""


class AnnotationStore:
    """Append-only store of unit annotations; every version is kept, nothing is overwritten.

    Thread-safe: each call uses its own session. Writers are serialised by the
    database (see :mod:`annotations.db`), and a write that still collides on a
    version number is retried, so an acknowledged write is never lost.
    Methods return frozen :class:`AnnotationRecord` values, never ORM objects.
    A database that cannot be reached raises :class:`StoreUnavailableError`, and
    one without disk space for a write :class:`StoreFullError`, from every method.
    """

    def __init__(self, bind: Engine | str, *, max_attempts: int = 5) -> None:
        """Use ``bind``, an engine or a database URL (then the store owns and disposes the engine).

        ``max_attempts`` bounds the tries of one write that collides on a version number.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self._owns_engine = isinstance(bind, str)
        self.engine: Engine = create_engine_from_url(bind) if isinstance(bind, str) else bind
        self._max_attempts = max_attempts
        self._reader = session_factory(self.engine)
        self._writer = session_factory(self.engine, writer=True)

    def __repr__(self) -> str:
        return f"AnnotationStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def init_schema(self) -> None:
        """Create the tables where missing (see :func:`annotations.db.init_db`)."""
        init_db(self.engine)

    def close(self) -> None:
        """Release pooled connections if the store created its engine."""
        if self._owns_engine:
            self.engine.dispose()

    # -- writes -------------------------------------------------------------

    def add(self, **fields: Any) -> AnnotationRecord:
        """Append the next version of an annotator's label for a unit and return it as stored.

        ``fields`` are those of :class:`NewAnnotation`. Raises
        :class:`AnnotationValidationError` naming the field when a value is
        unacceptable, and :class:`AnnotationConflictError` if concurrent
        writers still collided after ``max_attempts`` tries (nothing written).
        """
        return self.add_many([NewAnnotation(**fields)])[0]

    def add_many(
        self, items: Sequence[NewAnnotation], *, precondition: Precondition | None = None
    ) -> list[AnnotationRecord]:
        """Append all ``items`` in one transaction, all or nothing, and return them in order.

        Items for the same (unit, annotator) take consecutive versions in the
        order given. Errors as :meth:`add`. ``precondition``, when given, is
        called with the latest records of the batch's units once the writer
        lock is held, so nothing can be written between its check and the
        insert; whatever it raises aborts the write (nothing stored) and
        propagates. It runs again if the write is retried.
        """
        batch = list(items)
        for position, item in enumerate(batch):
            if not isinstance(item, NewAnnotation):
                raise TypeError(f"items[{position}] must be a NewAnnotation, got {type(item).__name__}")
        if not batch:
            return []
        # Writers are serialised (see annotations.db), so a clash means a writer that
        # skipped the lock (another engine or tool); retrying keeps the write anyway.
        attempt = 1
        while True:
            try:
                return self._append(batch, precondition)
            except IntegrityError as exc:
                if not _is_version_clash(exc):
                    raise
                if attempt >= self._max_attempts:
                    raise AnnotationConflictError(
                        f"version numbers kept colliding with concurrent writers; gave up after {attempt} attempt(s)"
                    ) from exc
            time.sleep(random.uniform(0.0, 0.005 * 2**attempt))
            attempt += 1

    def _append(self, batch: list[NewAnnotation], precondition: Precondition | None) -> list[AnnotationRecord]:
        with self._database_errors(), self._writer() as session, session.begin():
            lock_writers(session)
            if precondition is not None:
                unit_ids = sorted({item.unit_id for item in batch})
                latest: dict[int, list[AnnotationRecord]] = {unit_id: [] for unit_id in unit_ids}
                for record in self._latest_in(session, Annotation.unit_id.in_(unit_ids)):
                    latest[record.unit_id].append(record)
                precondition(latest)
            # Read the clock only once the lock is held, so created_at follows id order.
            created_at = datetime.now(timezone.utc)
            versions = self._current_versions(session, {(item.unit_id, item.annotator) for item in batch})
            rows = []
            for item in batch:
                key = (item.unit_id, item.annotator)
                versions[key] = versions.get(key, 0) + 1
                rows.append(Annotation(**asdict(item), version=versions[key], created_at=created_at))
            session.add_all(rows)
            session.flush()
            records = [_to_record(row) for row in rows]
        return records

    def _current_versions(self, session: Session, keys: set[VersionKey]) -> dict[VersionKey, int]:
        """The highest stored version of each key that has one, read inside the writing transaction."""
        unit_ids = sorted({unit_id for unit_id, _ in keys})
        found: dict[VersionKey, int] = {}
        for chunk in _chunks(unit_ids, _IN_CHUNK):
            stmt = (
                select(Annotation.unit_id, Annotation.annotator, func.max(Annotation.version))
                .where(Annotation.unit_id.in_(chunk))
                .group_by(Annotation.unit_id, Annotation.annotator)
            )
            for unit_id, annotator, version in session.execute(stmt):
                if (unit_id, annotator) in keys:
                    found[(unit_id, annotator)] = version
        return found

    # -- reads --------------------------------------------------------------

    def latest(self, *, unit_id: int) -> list[AnnotationRecord]:
        """The latest version from each annotator of ``unit_id``, in write order; [] if none."""
        return self._latest(Annotation.unit_id == check_unit_id(unit_id))

    def latest_for_units(self, *, unit_ids: Sequence[int]) -> dict[int, list[AnnotationRecord]]:
        """:meth:`latest` for several units in one query; every requested id is a key, [] when unlabelled."""
        wanted = list(dict.fromkeys(check_unit_id(unit_id) for unit_id in unit_ids))
        result: dict[int, list[AnnotationRecord]] = {unit_id: [] for unit_id in wanted}
        if wanted:
            for record in self._latest(Annotation.unit_id.in_(wanted)):
                result[record.unit_id].append(record)
        return result

    def all_latest(self) -> list[AnnotationRecord]:
        """The latest version per (unit, annotator) for every unit, by unit id, then write order."""
        return self._latest()

    def history(self, *, unit_id: int) -> list[AnnotationRecord]:
        """Every version from every annotator of ``unit_id``, oldest first."""
        return self._select(Annotation.unit_id == check_unit_id(unit_id))

    def all_versions(self) -> list[AnnotationRecord]:
        """Every stored version of every unit, oldest first."""
        return self._select()

    def count(self) -> int:
        """How many versions are stored, all units and annotators together."""
        with self._database_errors(), self._reader() as session:
            return session.scalar(select(func.count()).select_from(Annotation)) or 0

    def has_annotations(self, *, annotator: str, bundle_hash: str) -> bool:
        """Whether ``annotator`` has labelled any unit under the bundle ``bundle_hash``."""
        stmt = (
            select(Annotation.id)
            .where(
                Annotation.annotator
                == check_text(annotator, field="annotator", max_length=lexicon.MAX_ANNOTATOR_LENGTH),
                Annotation.bundle_hash == check_sha256(bundle_hash),
            )
            .limit(1)
        )
        with self._database_errors(), self._reader() as session:
            return session.scalar(stmt) is not None

    def ping(self) -> None:
        """Run ``SELECT 1``; raise :class:`StoreUnavailableError` when the database cannot answer."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def _database_errors(self) -> Iterator[None]:
        """Database failures as the store's errors: no disk space → :class:`StoreFullError`; a refused, lost or
        broken connection → :class:`StoreUnavailableError`. Anything else (a constraint, a refused value) passes."""
        try:
            yield
        except DBAPIError as exc:
            if is_disk_full(exc):
                raise StoreFullError(f"{self!r} has no disk space left for the write: {exc.orig}") from exc
            if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
                raise self._unavailable(exc) from exc
            raise

    def _unavailable(self, exc: DBAPIError) -> StoreUnavailableError:
        return StoreUnavailableError(f"{self!r} is unavailable: {type(exc.orig).__name__}: {exc.orig}")

    # Write order is the id order: ids are assigned under the writer lock,
    # while created_at comes from each writer's clock and ties within a batch.
    def _select(self, *conditions: ColumnElement[bool]) -> list[AnnotationRecord]:
        stmt = select(Annotation).where(*conditions).order_by(Annotation.id)
        with self._database_errors(), self._reader() as session:
            return [_to_record(row) for row in session.scalars(stmt)]

    def _latest(self, *conditions: ColumnElement[bool]) -> list[AnnotationRecord]:
        with self._database_errors(), self._reader() as session:
            return self._latest_in(session, *conditions)

    def _latest_in(self, session: Session, *conditions: ColumnElement[bool]) -> list[AnnotationRecord]:
        newest = (
            select(Annotation.unit_id, Annotation.annotator, func.max(Annotation.version).label("version"))
            .where(*conditions)
            .group_by(Annotation.unit_id, Annotation.annotator)
            .subquery()
        )
        stmt = (
            select(Annotation)
            .join(
                newest,
                and_(
                    Annotation.unit_id == newest.c.unit_id,
                    Annotation.annotator == newest.c.annotator,
                    Annotation.version == newest.c.version,
                ),
            )
            .order_by(Annotation.unit_id, Annotation.id)
        )
        return [_to_record(row) for row in session.scalars(stmt)]


def _to_record(row: Annotation) -> AnnotationRecord:
    return AnnotationRecord(**record_values(row))


def _is_version_clash(exc: IntegrityError) -> bool:
    """Whether ``exc`` is the (unit_id, annotator, version) unique constraint, by its name
    (PostgreSQL) or its columns (SQLite, whose message names no constraint)."""
    message = str(exc.orig)
    return "uq_unit_annotations_version" in message or f"{TABLE_NAME}.version" in message


def _chunks(values: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
