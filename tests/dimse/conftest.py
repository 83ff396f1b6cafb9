"""Fixtures of the DICOM listener tests: mammograms as DICOM, a pynetdicom SCU, the SCP in-process or as its process.

The tests are the SCU: every association is a real one over loopback, with the
listener's real server object (:class:`StorageScp` on a thread) or the real
``python -m service.dimse`` process.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    DigitalMammographyXRayImageStorageForPresentation,
    Verification,
)

from deepminer.bundle import load_bundle
from service.dimse.metrics import DimseMetrics
from service.dimse.scp import StorageScp
from service.dimse.sender import RESULT_SOP_CLASSES
from service.dimse.outbox import Outbox
from service.dimse.settings import DimseSettings
from service.dimse.spool import Spool
from service.dimse.worker import SpoolWorker
from service.explainer import Explainer
from service.loading import load_explainer
from service.pacs.equipment import Equipment
from service.settings import Settings
from tests.faults.conftest import tiny_disk  # noqa: F401  (a fixture: a tmpfs of a given size)
from tests.pacs.conftest import make_mammogram

CALLING = "TESTSCU"
CALLED = "DEEPMINER"
DESTINATION = "RESULTS_PACS"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_dataset(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def encoded(ds: Dataset) -> bytes:
    """``ds`` as a Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def explainer(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Explainer]:
    """The service's explainer for the tiny bundle, built as both processes build it (SQLite label store)."""
    settings = Settings(bundle=tiny_bundle, database_url=f"sqlite:///{tmp_path_factory.mktemp('db') / 'labels.db'}")
    with ExitStack() as stack:
        yield load_explainer(settings, load_bundle(tiny_bundle), stack).explainer


@pytest.fixture(scope="session")
def new_instance(phantom_png: bytes) -> Callable[[], Dataset]:
    """``new_instance()``: a phantom MG For Presentation data set in a study of its own, with patient identifiers."""
    return lambda: as_dataset(make_mammogram(phantom_png))


def make_worker(root: Path, explainer: Explainer) -> tuple[SpoolWorker, Spool, Outbox, DimseMetrics]:
    """The spool worker on ``root`` (the spool, its outbox and its metrics) as the listener builds it."""
    spool, outbox, metrics = Spool(root, max_bytes=1 << 30), Outbox(root), DimseMetrics()
    equipment = Equipment.for_model(explainer.model, software_version="test")
    worker = SpoolWorker(
        spool=spool, outbox=outbox, explainer=explainer, equipment=equipment, metrics=metrics, retry_s=60
    )
    return worker, spool, outbox, metrics


@contextmanager
def associate(port: int, *, calling: str = CALLING, called: str = CALLED) -> Iterator[Association]:
    """An association from the test's SCU; released (or aborted) on exit, whether or not it was accepted."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(DigitalMammographyXRayImageStorageForPresentation)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


@dataclass
class InProcessScp:
    """The real :class:`StorageScp` serving on a thread, its spool and its metrics."""

    port: int
    spool: Spool
    metrics: DimseMetrics

    def count(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def start_scp(tmp_path: Path) -> Iterator[Callable[..., InProcessScp]]:
    """``start_scp(spool_dir=..., max_spool_bytes=...)``: the SCP on a free loopback port until the test ends."""
    servers = []

    def start(*, spool_dir: Path | None = None, max_spool_bytes: int = 1 << 30) -> InProcessScp:
        settings = DimseSettings(
            port=free_port(),
            allowed_calling_ae_titles=[CALLING],
            spool_dir=spool_dir or tmp_path / "spool",
            max_spool_bytes=max_spool_bytes,
        )
        spool = Spool(settings.spool_dir, max_bytes=settings.max_spool_bytes)
        metrics = DimseMetrics()
        metrics.watch_spool(spool.depth, lambda: spool.bytes)
        servers.append(StorageScp(settings, spool=spool, metrics=metrics).start())
        return InProcessScp(port=settings.port, spool=spool, metrics=metrics)

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()


@dataclass
class DestinationScp:
    """A Storage SCP standing for the PACS: keeps what it receives and answers ``status``."""

    port: int
    status: int = 0x0000
    received: list[Dataset] = field(default_factory=list)
    calls: int = 0
    server: object | None = None

    def start(self) -> None:
        ae = AE(ae_title=DESTINATION)
        for sop_class in RESULT_SOP_CLASSES:
            ae.add_supported_context(sop_class)
        handlers = [(evt.EVT_C_STORE, self._store)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def _store(self, event: Event) -> int:
        self.calls += 1
        if self.status == 0x0000:
            self.received.append(event.dataset)
        return self.status

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()  # type: ignore[attr-defined]


@pytest.fixture
def destination() -> Iterator[DestinationScp]:
    """The results' destination on a free port, not started."""
    scp = DestinationScp(port=free_port())
    try:
        yield scp
    finally:
        scp.stop()


@dataclass
class ListenerProcess:
    """``python -m service.dimse`` as a child process, with its environment and everything it logged."""

    env: dict[str, str]
    spool_dir: Path
    port: int
    metrics_port: int
    logs: list[Path] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 120.0) -> None:
        """Start it and wait until it answers C-ECHO."""
        log = self.spool_dir.parent / f"listener-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "service.dimse"], env=self.env, cwd=ROOT, stderr=out)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the listener exited ({self.process.returncode}): {log.read_text()[-2000:]}")
            with associate(self.port) as assoc:
                if assoc.is_established and assoc.send_c_echo().Status == 0x0000:
                    return
            time.sleep(0.2)
        raise AssertionError(f"the listener did not answer C-ECHO within {timeout_s} s: {log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM, as Kubernetes stops a pod; its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        return int(self.process.returncode)

    def events(self, name: str) -> list[dict[str, object]]:
        """The log lines of every run so far whose ``event`` is ``name``."""
        lines = []
        for log in self.logs:
            for line in log.read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("event") == name:
                    lines.append(json.loads(line))
        return lines


@pytest.fixture
def listener(tiny_bundle: Path, tmp_path: Path, destination: DestinationScp) -> Iterator[ListenerProcess]:
    """The listener process for the tiny bundle (not started), with a SQLite label store, sending its results to
    ``destination``; stopped after the test."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "DEEPMINER_BUNDLE": str(tiny_bundle),
        "DEEPMINER_DATABASE_URL": f"sqlite:///{tmp_path / 'labels.db'}",
        "DEEPMINER_INTRA_OP_THREADS": "1",
        "DEEPMINER_DIMSE_AE_TITLE": CALLED,
        "DEEPMINER_DIMSE_PORT": str(port),
        "DEEPMINER_DIMSE_METRICS_PORT": str(metrics_port),
        "DEEPMINER_DIMSE_ALLOWED_CALLING_AE_TITLES": json.dumps([CALLING]),
        "DEEPMINER_DIMSE_SPOOL_DIR": str(tmp_path / "spool"),
        "DEEPMINER_DIMSE_POLL_S": "0.1",
        "DEEPMINER_DIMSE_DESTINATION_AE_TITLE": DESTINATION,
        "DEEPMINER_DIMSE_DESTINATION_PORT": str(destination.port),
        "DEEPMINER_DIMSE_SEND_BACKOFF_S": "0.2",
    }
    started = ListenerProcess(env=env, spool_dir=tmp_path / "spool", port=port, metrics_port=metrics_port)
    try:
        yield started
    finally:
        if started.process is not None and started.process.poll() is None:
            started.stop()
