"""Fixtures of the unit-label store tests: one store per test, on SQLite and on PostgreSQL.

PostgreSQL comes from ``DEEPMINER_TEST_POSTGRES_URL``. Its tests run in a
schema of their own, created for the session and dropped after it, so no other
table in the database is touched. An unreachable server fails those tests
(``require_or_skip`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from annotations import AnnotationStore, NewAnnotation
from annotations.models import Base

BUNDLE_HASH = "ab" * 32


@pytest.fixture(scope="session")
def postgres_url(postgres_admin: tuple[str, Engine]) -> Iterator[str]:
    """A URL whose connections work in a fresh, session-private schema of the test database."""
    base_url, admin = postgres_admin
    schema = f"deepminer_test_{secrets.token_hex(4)}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database with the store's tables: a fresh SQLite file, or the emptied PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'annotations.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = AnnotationStore(url)
    Base.metadata.drop_all(store.engine)
    store.init_schema()
    store.close()
    yield url


@pytest.fixture
def store(database_url: str) -> Iterator[AnnotationStore]:
    """A store on :func:`database_url`, closed after the test."""
    store = AnnotationStore(database_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def make_item() -> Callable[..., NewAnnotation]:
    """Factory of valid :class:`NewAnnotation` values; keyword arguments override the defaults."""

    def make(**overrides: Any) -> NewAnnotation:
        values: dict[str, Any] = {
            "unit_id": 1814,
            "annotator": "dr_a",
            "label": "Edge of a mass with circumscribed margins",
            "category": "Mass",
            "bundle_hash": BUNDLE_HASH,
        }
        return NewAnnotation(**{**values, **overrides})

    return make
