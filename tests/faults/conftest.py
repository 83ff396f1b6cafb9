"""Fixtures of the fault suite: a throwaway PostgreSQL cluster, live servers, a tiny disk, and the fault table.

Each test injects one fault into real parts (the ``python -m service``
process, PostgreSQL, SQLite on a full disk, Orthanc) and adds a row to the
fault table: what was injected, how many labels were acknowledged, how many
were found afterwards, and the answers the clients saw. The table is printed
at the end of the run and written to ``faults.json`` in pytest's base
temporary directory.

A part a test needs and cannot find here (initdb, root for mount, Orthanc)
fails it (``require_or_skip`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_or_skip
from tests.deploy.conftest import LiveServer, start_server, stop_server
from tests.faults import cluster as pg
from tests.faults.writers import ReadBack

ROWS = pytest.StashKey[list["FaultRow"]]()
TABLE_FILE = pytest.StashKey[Path]()


@dataclass(frozen=True)
class FaultRow:
    """One line of the fault table."""

    fault: str
    injected: str
    acknowledged: int | None  # labels answered 201 (None: the fault involves no label writes)
    found: int | None  # of those, read back afterwards
    answers: Mapping[str, int]  # answer → how many writes (or requests) got it
    notes: str = ""

    @classmethod
    def of_writes(cls, found: ReadBack, *, fault: str, injected: str, notes: str = "") -> FaultRow:
        """The row of a fault played under label writers, from what :func:`read_back` found."""
        return cls(fault, injected, found.acknowledged_labels, found.found_labels, found.answers, notes)


@pytest.fixture(scope="session")
def fault_table(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[FaultRow], None]:
    """``fault_table(row)`` adds a row to the table printed at the end of the run and to ``faults.json``."""
    rows = request.config.stash.setdefault(ROWS, [])
    out = request.config.stash.setdefault(TABLE_FILE, tmp_path_factory.getbasetemp() / "faults.json")

    def add(row: FaultRow) -> None:
        rows.append(row)
        out.write_text(json.dumps([asdict(r) for r in rows], indent=2, default=str))

    return add


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    out = config.stash[TABLE_FILE]
    terminalreporter.section("fault table")
    for line in (
        "| fault | injected | acknowledged (labels; PACS: results) | found afterwards | answers the clients saw |",
        "| --- | --- | ---: | ---: | --- |",
    ):
        terminalreporter.write_line(line)
    for r in rows:
        answers = ", ".join(f"{answer}: {n}" for answer, n in r.answers.items())
        acknowledged = "–" if r.acknowledged is None else str(r.acknowledged)
        found = "–" if r.found is None else str(r.found)
        notes = f" ({r.notes})" if r.notes else ""
        terminalreporter.write_line(f"| {r.fault} | {r.injected} | {acknowledged} | {found} | {answers}{notes} |")
    terminalreporter.write_line(f"written to {out}")


# -- PostgreSQL ---------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[pg.Cluster]:
    """A running throwaway cluster (:mod:`tests.faults.cluster`), removed at the end of the session."""
    reason = pg.missing()
    if reason is not None:
        require_or_skip(f"no throwaway PostgreSQL cluster: {reason}")
    cluster = pg.new_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def cluster_database(postgres_cluster: pg.Cluster, request: pytest.FixtureRequest) -> str:
    """The URL of a new database on the throwaway cluster, named after the test."""
    if not (postgres_cluster.data / "postmaster.pid").exists():
        postgres_cluster.start()  # a previous test may have failed while the server was down
    name = "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    return postgres_cluster.create_database(f"faults_{name}_{secrets.token_hex(3)}")


# -- live servers -------------------------------------------------------------


@dataclass
class Servers:
    """Starts ``python -m service`` processes on the tiny bundle; every one still running is stopped afterwards."""

    bundle: Path
    tmp: pytest.TempPathFactory
    started: list[LiveServer] = field(default_factory=list)

    def start(self, database_url: str, **env: str) -> LiveServer:
        environment = {"DEEPMINER_DATABASE_URL": database_url, **env}
        workdir = self.tmp.mktemp("server")
        server = start_server(python=sys.executable, bundle=self.bundle, workdir=workdir, env=environment)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            if server.process.poll() is None:
                stop_server(server)


@pytest.fixture
def servers(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    started = Servers(bundle=tiny_bundle, tmp=tmp_path_factory)
    try:
        yield started
    finally:
        started.stop_all()


# -- a tiny disk --------------------------------------------------------------


@pytest.fixture
def tiny_disk() -> Iterator[Callable[[str], Path]]:
    """``tiny_disk("2m")``: a new tmpfs of that size, unmounted afterwards; needs root (or CAP_SYS_ADMIN)."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        point = Path(tempfile.mkdtemp(prefix="deepminer-faults-disk-"))
        run = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode != 0:
            point.rmdir()
            require_or_skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {run.stderr.strip()}")
        mounts.append(point)
        return point

    try:
        yield mount
    finally:
        for point in mounts:
            subprocess.run(["umount", "-l", str(point)], check=False, capture_output=True)
            if not os.path.ismount(point):
                point.rmdir()
