"""Fixtures of the deployment tests: empty databases, the rendered chart, and a live server.

PostgreSQL comes from ``DEEPMINER_TEST_POSTGRES_URL``; each database a test asks
for is a schema of its own, dropped after the test. An unreachable server
fails those tests (``require_or_skip`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0

DatabaseFactory = Callable[[], str]


# -- databases --------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DatabaseFactory]:
    """A factory of empty databases: SQLite files, or PostgreSQL schemas of their own (dropped afterwards)."""
    if request.param == "sqlite":
        counter = iter(range(1_000))
        yield lambda: f"sqlite:///{tmp_path / f'store{next(counter)}.db'}"
        return
    base_url, engine = request.getfixturevalue("postgres_admin")
    schemas: list[str] = []

    def make() -> str:
        schema = f"deepminer_deploy_test_{secrets.token_hex(4)}"
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        schemas.append(schema)
        separator = "&" if "?" in base_url else "?"
        return f"{base_url}{separator}options={quote(f'-csearch_path={schema}')}"

    try:
        yield make
    finally:
        with engine.begin() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


# -- a live server ----------------------------------------------------------


@dataclass(frozen=True)
class LiveServer:
    """A ``python -m service`` process listening on loopback."""

    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    *, python: str | os.PathLike[str], bundle: Path, workdir: Path, env: Mapping[str, str] | None = None
) -> LiveServer:
    """Start ``python -m service`` on a free loopback port and wait until /readyz answers 200.

    The database is an SQLite file in ``workdir``, which also receives the log.
    Fails the test with the server's log if it exits or is not ready in time.
    """
    port = free_port()
    log = workdir / "server.log"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEEPMINER_")},
        "DEEPMINER_HOST": "127.0.0.1",
        "DEEPMINER_PORT": str(port),
        "DEEPMINER_BUNDLE": str(bundle),
        "DEEPMINER_DATABASE_URL": f"sqlite:///{workdir / 'labels.db'}",
        "DEEPMINER_DEVICE": "cpu",
        "DEEPMINER_INTRA_OP_THREADS": "1",
        **(env or {}),
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [os.fspath(python), "-m", "service"], cwd=workdir, env=environment, stdout=sink, stderr=subprocess.STDOUT
        )
    server = LiveServer(base_url=f"http://127.0.0.1:{port}", process=process, log=log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"python -m service exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    stop_server(server)
    pytest.fail(f"python -m service was not ready within {READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-4000:]}")


def stop_server(server: LiveServer) -> None:
    """SIGTERM, as an orchestrator does; then kill if it does not stop."""
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=20)


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def start_live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """``start(python=..., bundle=..., env=...)`` runs :func:`start_server` in a fresh directory; all stop afterwards."""
    servers: list[LiveServer] = []

    def start(*, python: str | os.PathLike[str], bundle: Path, env: Mapping[str, str] | None = None) -> LiveServer:
        servers.append(start_server(python=python, bundle=bundle, workdir=tmp_path_factory.mktemp("server"), env=env))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            if server.process.poll() is None:
                stop_server(server)


@pytest.fixture(scope="module")
def live_server(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The service from this checkout's environment, on the lead's tiny bundle."""
    server = start_server(python=sys.executable, bundle=tiny_bundle, workdir=tmp_path_factory.mktemp("live"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()
