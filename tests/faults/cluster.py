"""A throwaway PostgreSQL cluster (initdb in a temporary directory, on a free loopback port) that a test may stop.

The shared server the rest of the suite uses is never stopped: the database
outage is played on a cluster of the test's own. initdb refuses to run as
root, so as root every PostgreSQL program runs as the ``postgres`` user
(``runuser``), which owns the cluster's directory.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.deploy.conftest import free_port

SERVER_USER = "postgres"


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl are: ``pg_config --bindir``, else Debian's newest /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if found and (Path(found) / "initdb").is_file():
            return Path(found)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name), reverse=True
    )
    return candidates[0].parent if candidates else None


def missing() -> str | None:
    """Why no throwaway cluster can be made here, or None."""
    if postgres_bindir() is None:
        return "PostgreSQL's initdb and pg_ctl are not installed (Debian package postgresql)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "runuser is missing (util-linux): initdb must not run as root"
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"no {SERVER_USER!r} user to run initdb as (root may not)"
    return None


@dataclass
class Cluster:
    """One PostgreSQL cluster in ``root``, listening on 127.0.0.1:``port`` only (no Unix socket)."""

    root: Path
    bindir: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if run.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{program} {' '.join(args)} failed ({run.returncode}):\n{run.stdout}{run.stderr}{log}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SERVER_USER, "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories=''"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Stop the server the way an operator or a failover does: open sessions are cut, transactions rolled back."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_tablespace(self, name: str, directory: Path) -> None:
        """A tablespace in ``directory`` (empty; made the server user's here)."""
        directory.mkdir()
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        self._admin(f"CREATE TABLESPACE \"{name}\" LOCATION '{directory}'")

    def _admin(self, statement: str) -> None:
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def new_cluster() -> Cluster:
    """Create (initdb) and start a cluster in a new temporary directory the server user owns."""
    bindir = postgres_bindir()
    assert bindir is not None
    # Not under pytest's base temp: that is private to the test's user, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="deepminer-faults-pg-"))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    cluster = Cluster(root=root, bindir=bindir)
    cluster.init()
    cluster.start()
    return cluster
