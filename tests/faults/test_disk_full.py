"""The label store's disk full while clients write labels (a tiny tmpfs, filled to the last byte).

SQLite keeps its database file on the tmpfs; PostgreSQL (the throwaway
cluster) keeps the label tables there, in a tablespace the connection makes
the default, while its write-ahead log stays on the cluster's disk. Writes
that find no room are answered 507 ``store_full``, never 500; reads, /readyz
and /explain keep answering. Once space is freed writes are acknowledged
again, and after a restart every label answered 201 is there.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.deploy.conftest import stop_server
from tests.faults.cluster import Cluster
from tests.faults.conftest import FaultRow, Servers
from tests.faults.writers import LabelWriters, read_back

CLIENTS = 2
DISK = "4m"
REFUSED_WANTED = 10  # writes answered 507 before space is freed
PAD = " ".join(["Irregular mass with spiculated margins."] * 100)  # about 4 kB a label: the disk fills fast


def fill(disk: Path) -> int:
    """Write a filler file until the file system has no byte left; returns its size."""
    written = 0
    with (disk / "filler").open("wb", buffering=0) as filler:
        for size in (1 << 16, 1 << 10, 1):
            while True:
                try:
                    written += filler.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return written


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_disk_full_gives_507_and_the_service_keeps_explaining(
    database: str,
    tiny_disk: Callable[[str], Path],
    servers: Servers,
    phantom_png: bytes,
    request: pytest.FixtureRequest,
    fault_table: Callable[[FaultRow], None],
) -> None:
    disk = tiny_disk(DISK)
    if database == "sqlite":
        url = f"sqlite:///{disk / 'labels.db'}"
        where = "label database"
    else:
        cluster: Cluster = request.getfixturevalue("postgres_cluster")
        tablespace = f"faults_disk_{disk.name[-8:].lower()}"
        cluster.create_tablespace(tablespace, disk / "tablespace")
        url = f"{request.getfixturevalue('cluster_database')}?options={quote(f'-c default_tablespace={tablespace}')}"
        where = "label tables (a tablespace)"
    server = servers.start(url)
    filler = fill(disk)
    with LabelWriters(server.base_url, clients=CLIENTS, description_pad=PAD) as writers:
        writers.wait_for(lambda attempts: sum(a.status == 507 for a in attempts) >= REFUSED_WANTED)
        # Full: everything that only reads still answers.
        with httpx.Client(base_url=server.base_url, timeout=60.0) as http:
            explained = http.post("/explain", files={"file": ("m.png", phantom_png, "image/png")})
            unit = http.get("/units/0")
            ready = http.get("/readyz")
        (disk / "filler").unlink()
        freed = len(writers.snapshot())
        writers.wait_for(lambda attempts: sum(a.acknowledged for a in attempts[freed:]) >= 10)
    attempts = writers.stop()

    assert explained.status_code == 200, explained.text
    assert explained.json()["explanation"]["labels_available"] is True
    assert unit.status_code == 200 and ready.status_code == 200
    refused = [a for a in attempts if not a.acknowledged]
    assert {a.answer for a in refused} == {"507 store_full"}
    acknowledged_while_full = sum(a.acknowledged for a in attempts[:freed])

    stop_server(server)
    restarted = servers.start(url)
    found = read_back(restarted.base_url, attempts)
    fault_table(
        FaultRow.of_writes(
            found,
            fault=f"disk full ({database})",
            injected=f"{where} on a {DISK} tmpfs, the rest filled ({filler} bytes); {CLIENTS} clients writing "
            "4 kB labels; then the filler removed and the server restarted",
            notes=f"{acknowledged_while_full} writes still fitted after the fill; while full /explain "
            f"{explained.status_code}, GET /units/0 {unit.status_code}, /readyz {ready.status_code}",
        )
    )
    found.assert_nothing_lost()
    assert found.unacknowledged_stored == 0  # a write refused for want of space left nothing behind
