"""Every method of the unit-label store names an unreachable database: StoreUnavailableError, never a raw
SQLAlchemy error that the service would have to guess about.

The databases are really unreachable: PostgreSQL on a loopback port nothing
listens on (the connection is refused), SQLite in a directory that does not
exist (the file cannot be opened).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from annotations import AnnotationStore, NewAnnotation, StoreUnavailableError
from tests.deploy.conftest import free_port

CALLS: dict[str, Callable[[AnnotationStore], Any]] = {
    "add": lambda s: s.add(unit_id=1, annotator="dr_a", label="Mass edge", category="Mass", bundle_hash="ab" * 32),
    "add_many": lambda s: s.add_many(
        [NewAnnotation(unit_id=1, annotator="dr_a", label="Mass edge", category="Mass", bundle_hash="ab" * 32)]
    ),
    "latest": lambda s: s.latest(unit_id=1),
    "latest_for_units": lambda s: s.latest_for_units(unit_ids=[1, 2]),
    "all_latest": lambda s: s.all_latest(),
    "history": lambda s: s.history(unit_id=1),
    "all_versions": lambda s: s.all_versions(),
    "count": lambda s: s.count(),
    "has_annotations": lambda s: s.has_annotations(annotator="dr_a", bundle_hash="ab" * 32),
    "ping": lambda s: s.ping(),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> AnnotationStore:
    if request.param == "sqlite":
        return AnnotationStore(f"sqlite:///{tmp_path / 'no-such-directory' / 'labels.db'}")
    return AnnotationStore(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=3")


@pytest.mark.parametrize("call", CALLS)
def test_an_unreachable_database_is_store_unavailable(unreachable: AnnotationStore, call: str) -> None:
    with pytest.raises(StoreUnavailableError, match="is unavailable: OperationalError"):
        CALLS[call](unreachable)
    unreachable.close()
