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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    DigitalMammographyXRayImageStorageForPresentation,
    Verification,
)

from service.dimse.metrics import DimseMetrics
from service.dimse.scp import StorageScp
from service.dimse.settings import DimseSettings
from service.dimse.spool import Spool
from tests.faults.conftest import tiny_disk  # noqa: F401  (a fixture: a tmpfs of a given size)
from tests.pacs.conftest import make_mammogram

CALLING = "TESTSCU"
CALLED = "DEEPMINER"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def as_dataset(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@pytest.fixture(scope="session")
def new_instance(phantom_png: bytes) -> Callable[[], Dataset]:
    """``new_instance()``: a phantom MG For Presentation data set in a study of its own, with patient identifiers."""
    return lambda: as_dataset(make_mammogram(phantom_png))


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
    """``start_scp(spool_dir=..., max_spool_bytes=...)``: the SCP serving on a free loopback port until the test ends."""
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
        servers.append(StorageScp(settings, spool=spool, metrics=metrics).start())
        return InProcessScp(port=settings.port, spool=spool, metrics=metrics)

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()


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
def listener(tiny_bundle: Path, tmp_path: Path) -> Iterator[ListenerProcess]:
    """The listener process for the tiny bundle (not started), with a SQLite label store; stopped after the test."""
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
    }
    started = ListenerProcess(env=env, spool_dir=tmp_path / "spool", port=port, metrics_port=metrics_port)
    try:
        yield started
    finally:
        if started.process is not None and started.process.poll() is None:
            started.stop()
