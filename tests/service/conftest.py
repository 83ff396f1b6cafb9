"""Fixtures of the service tests: apps on the lead's ``tiny_bundle``, images, and databases.

Store-touching tests run on SQLite and on PostgreSQL. PostgreSQL comes from
``DEEPMINER_TEST_POSTGRES_URL``; every test gets a schema of its own, created
before and dropped after it, so no other table is touched. An unreachable
server fails those tests (``require_or_skip`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import text
from sqlalchemy.engine import Engine

from deepminer.bundle import META_FILE, finalise_bundle
from service.main import create_app
from service.settings import Settings


ClientFactory = Callable[..., AbstractContextManager[TestClient]]


# -- databases --------------------------------------------------------------


@pytest.fixture
def postgres_url(postgres_admin: tuple[str, Engine]) -> Iterator[str]:
    """A URL whose connections work in a fresh schema of their own, dropped after the test."""
    base_url, engine = postgres_admin
    schema = f"deepminer_service_test_{secrets.token_hex(4)}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty unit-label database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labels.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


# -- apps -------------------------------------------------------------------


@pytest.fixture
def make_client(tiny_bundle: Path, tmp_path: Path) -> ClientFactory:
    """``with make_client(**settings) as client:`` runs a started app (lifespan included) on ``tiny_bundle``."""

    @contextmanager
    def factory(**overrides: Any) -> Iterator[TestClient]:
        overrides.setdefault("database_url", f"sqlite:///{tmp_path / 'labels.db'}")
        overrides.setdefault("bundle", tiny_bundle)
        app = create_app(Settings(**overrides))
        with TestClient(app) as client:
            yield client

    return factory


@pytest.fixture(scope="module")
def client(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One started app per module, on SQLite, for tests that write nothing."""
    db = tmp_path_factory.mktemp("db") / "labels.db"
    app = create_app(Settings(bundle=tiny_bundle, database_url=f"sqlite:///{db}"))
    with TestClient(app) as started:
        yield started


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Callable[..., Path]:
    """``bundle_copy(edit=None)``: a copy of ``tiny_bundle``; ``edit(dir)`` may change files, then it is re-finalised."""

    def factory(edit: Callable[[Path], None] | None = None) -> Path:
        target = tmp_path / f"bundle-{secrets.token_hex(3)}"
        shutil.copytree(tiny_bundle, target)
        if edit is not None:
            edit(target)
            meta = json.loads((target / META_FILE).read_text())
            meta.pop("files", None)
            finalise_bundle(target, meta)
        return target

    return factory


# -- images -----------------------------------------------------------------


def phantom_array(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint16)


def encode(array: np.ndarray, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="session")
def phantom_tiff(phantom_png: bytes) -> bytes:
    """The phantom as a 16-bit TIFF."""
    return encode(phantom_array(phantom_png), "TIFF")


PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PID-424242"


@pytest.fixture(scope="session")
def phantom_dicom(phantom_png: bytes) -> bytes:
    """The phantom as a 16-bit MG DICOM (Part 10) whose header carries patient identifiers."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    mammography = uid.UID("1.2.840.10008.5.1.4.1.1.1.2")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = mammography
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.UID("1.2.3.4.5.6.3")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.5.6.1", "1.2.3.4.5.6.2"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19610402"
    ds.Modality = "MG"
    ds.set_pixel_data(phantom_array(phantom_png), "MONOCHROME2", 16, generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="session")
def phantom_jpeg(phantom_png: bytes) -> bytes:
    """The phantom as an 8-bit JPEG."""
    return encode((phantom_array(phantom_png) >> 8).astype(np.uint8), "JPEG", quality=95)
