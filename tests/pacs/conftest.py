"""Fixtures of the PACS tests: mammogram DICOMs made from a phantom, a scriptable DICOMweb server, started apps.

:class:`FakePacs` is a real HTTP server on 127.0.0.1 (a thread) that speaks
enough WADO-RS, STOW-RS and QIDO-RS for the client, and fails on request: a status, a
hang past the client's timeout, a body that is not DICOMweb. The round trip
against a real PACS is ``test_orthanc.py``.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from service.main import create_app
from service.pacs.multipart import boundary_of, join, split
from service.settings import Settings
from tests.conftest import require_or_skip

PATIENT_NAME = "Roe^Janet"
PATIENT_ID = "PACS-PID-7319"
PATIENT_BIRTH_DATE = "19580217"
ACCESSION = "ACC-55231"
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"

ClientFactory = Callable[..., AbstractContextManager[TestClient]]


# -- DICOM sources ------------------------------------------------------------


def make_mammogram(png: bytes, *, full_header: bool = True, photometric: str = "MONOCHROME2") -> bytes:
    """The phantom PNG as a 16-bit MG For Presentation Part 10 file in a new study, with patient identifiers.

    ``full_header`` adds what a modality writes (study date, accession,
    orientation, laterality, view, spacing, window); without it the header is as
    bare as the service's own DICOM tests make it.
    """
    pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint16)
    if photometric == "MONOCHROME1":
        pixels = (65535 - pixels).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = uid.UID(MG_FOR_PRESENTATION)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE
    ds.Modality = "MG"
    if full_header:
        ds.PatientSex = "F"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240611", "093000", "S1", ACCESSION
        ds.ReferringPhysicianName = "Smith^Ann"
        ds.SeriesNumber, ds.InstanceNumber = 1, 1
        ds.PatientOrientation = ["A", "FR"]
        ds.ImageLaterality, ds.Laterality, ds.ViewPosition = "L", "L", "CC"
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.WindowCenter, ds.WindowWidth = 32768, 65536
        ds.BodyPartExamined = "BREAST"
    ds.set_pixel_data(pixels, photometric, 16, generate_instance_uid=False)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def mammogram(phantom_png: bytes) -> bytes:
    """A phantom mammogram as an MG DICOM with a full header and patient identifiers."""
    return make_mammogram(phantom_png)


@pytest.fixture(scope="session")
def new_mammogram(phantom_png: bytes) -> Callable[..., bytes]:
    """``new_mammogram(full_header=True, photometric="MONOCHROME2")``: another one, in a study of its own."""
    return lambda **options: make_mammogram(phantom_png, **options)


@pytest.fixture(scope="session")
def patient_identifiers() -> tuple[str, ...]:
    """What identifies the patient in the mammograms: it must never reach a log line or an error message."""
    return PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE, ACCESSION, "Roe", "Janet"


def uids_of(data: bytes) -> tuple[str, str, str]:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


# -- dciodvfy -----------------------------------------------------------------


@pytest.fixture
def dicom_errors(tmp_path: Path) -> Callable[[bytes], list[str]]:
    """``dicom_errors(data)``: the errors ``dciodvfy`` reports for a Part 10 file."""
    return lambda data: dciodvfy(data, tmp_path)


def dciodvfy(data: bytes, tmp_path: Path) -> list[str]:
    """The error lines ``dciodvfy`` (dicom3tools) prints for a Part 10 file; :func:`require_or_skip` without it."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        require_or_skip("dciodvfy not found: install the Debian package dicom3tools")
    assert tool is not None
    path = tmp_path / f"object-{time.monotonic_ns()}.dcm"
    path.write_bytes(data)
    run = subprocess.run([tool, str(path)], check=False, capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith(("Error", "Abort"))]


# -- a scriptable DICOMweb server ---------------------------------------------


@dataclass
class FakePacs:
    """Holds instances; answers WADO-RS, STOW-RS and a study's QIDO-RS; fails as told by :meth:`fail_next`."""

    url: str = ""
    instances: dict[str, bytes] = field(default_factory=dict)  # SOP Instance UID -> Part 10 bytes
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    failures: list[Any] = field(default_factory=list)
    refuse_store: bool = False
    drop_stored: bool = False  # acknowledge a STOW-RS, then keep nothing (as a PACS whose filter drops instances)
    check_uids: bool = True  # False: serve the instance filed under the SOP Instance UID, whatever it holds
    hang_s: float = 2.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, data: bytes) -> tuple[str, str, str]:
        study, series, sop = uids_of(data)
        self.instances[sop] = data
        return study, series, sop

    def fail_next(self, *failures: Any) -> None:
        """Each following request gets the next failure: a status code, ``"hang"`` or ``"html"``."""
        self.failures.extend(failures)

    def count(self, method: str) -> int:
        return sum(1 for m, _, _ in self.requests if m == method)


def _handler(pacs: FakePacs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: Any) -> None:
            pass

        def _answer(
            self, status: int, body: bytes = b"", content_type: str = "application/json", **headers: str
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def _failure(self) -> bool:
            with pacs.lock:
                failure = pacs.failures.pop(0) if pacs.failures else None
            if failure is None:
                return False
            if failure == "hang":
                time.sleep(pacs.hang_s)
                self._answer(200, b"too late")
            elif failure == "html":
                self._answer(200, b"<html>login</html>", "text/html")
            else:
                self._answer(int(failure), b'{"error": "scripted"}', Retry_After="0")
            return True

        def do_GET(self) -> None:
            pacs.requests.append(("GET", self.path, dict(self.headers)))
            if self._failure():
                return
            parts = self.path.strip("/").split("/")
            if len(parts) == 4 and parts[1] == "studies" and parts[3] == "instances":  # QIDO-RS
                held = [
                    {"00080018": {"vr": "UI", "Value": [sop]}}
                    for sop, data in pacs.instances.items()
                    if uids_of(data)[0] == parts[2]
                ]
                self._answer(200, json.dumps(held).encode(), "application/dicom+json")
                return
            data = pacs.instances.get(parts[-1]) if len(parts) >= 7 and parts[-2] == "instances" else None
            if data is None or (pacs.check_uids and uids_of(data) != (parts[-5], parts[-3], parts[-1])):
                self._answer(404, b'{"error": "no such instance"}')
                return
            body, content_type = join([data], media_type="application/dicom")
            self._answer(200, body, content_type)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            pacs.requests.append(("POST", self.path, dict(self.headers)))
            if self._failure():
                return
            study = self.path.rstrip("/").split("/")[-1]
            boundary = boundary_of(self.headers.get("Content-Type", ""))
            assert boundary is not None
            referenced, failed = [], []
            for _, part in split(body, boundary):
                part_study, _, sop = uids_of(part)
                item = {"00081155": {"vr": "UI", "Value": [sop]}}
                if pacs.refuse_store or part_study != study:
                    failed.append(
                        {**item, "00081197": {"vr": "US", "Value": [0xA900 if part_study != study else 0xA700]}}
                    )
                else:
                    if not pacs.drop_stored:
                        pacs.instances[sop] = part
                    referenced.append({**item, "00081190": {"vr": "UR", "Value": [f"{pacs.url}/studies/{study}"]}})
            report: dict[str, Any] = {"00081199": {"vr": "SQ", "Value": referenced}}
            if failed:
                report["00081198"] = {"vr": "SQ", "Value": failed}
            status = 200 if not failed else (202 if referenced else 409)
            self._answer(status, json.dumps(report).encode(), "application/dicom+json")

    return Handler


@pytest.fixture
def fake_pacs() -> Iterator[FakePacs]:
    """A running :class:`FakePacs` at ``fake_pacs.url`` (a DICOMweb base URL)."""
    pacs = FakePacs()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(pacs))
    server.daemon_threads = True
    pacs.url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield pacs
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A DICOMweb URL on a local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/dicom-web"


# -- apps ---------------------------------------------------------------------


@pytest.fixture
def make_client(tiny_bundle: Path, tmp_path: Path) -> ClientFactory:
    """``with make_client(**settings) as client:`` runs a started app on ``tiny_bundle`` with fast retries."""

    @contextmanager
    def factory(**overrides: Any) -> Iterator[TestClient]:
        overrides.setdefault("database_url", f"sqlite:///{tmp_path / 'labels.db'}")
        overrides.setdefault("bundle", tiny_bundle)
        overrides.setdefault("dicomweb_backoff_s", 0.01)
        app = create_app(Settings(**overrides))
        with TestClient(app) as client:
            yield client

    return factory
