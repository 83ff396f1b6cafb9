"""The server killed with SIGKILL during concurrent label writes, on SQLite and on PostgreSQL.

Nothing shuts down cleanly: no lifespan, no pool disposal, transactions cut
wherever they were. After a restart on the same database every label that
was answered 201 must be there, field for field; a batch is there whole or
not at all; no stored version is one that nobody sent, and each annotator's
versions of a unit still run 1..n.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import FaultRow, Servers
from tests.faults.writers import LabelWriters, read_back

CLIENTS = 4
ACKNOWLEDGED_BEFORE_KILL = 120  # writes answered 201 before the kill, so the kill lands mid-stream


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_sigkill_during_writes_loses_no_acknowledged_label(
    database: str,
    servers: Servers,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    fault_table: Callable[[FaultRow], None],
) -> None:
    url = f"sqlite:///{tmp_path / 'labels.db'}" if database == "sqlite" else request.getfixturevalue("cluster_database")
    server = servers.start(url)
    with LabelWriters(server.base_url, clients=CLIENTS) as writers:
        writers.wait_for(lambda attempts: sum(a.acknowledged for a in attempts) >= ACKNOWLEDGED_BEFORE_KILL)
        server.process.send_signal(signal.SIGKILL)
        assert server.process.wait(timeout=30) == -signal.SIGKILL
        # Every client sees the server gone before it stops.
        writers.wait_for(lambda attempts: {a.client for a in attempts if a.status is None} == set(range(CLIENTS)))
    attempts = writers.stop()

    assert {a.status for a in attempts} <= {201, None}, {a.answer for a in attempts}
    restarted = servers.start(url)
    found = read_back(restarted.base_url, attempts)
    fault_table(
        FaultRow.of_writes(
            found,
            fault=f"kill -9 ({database})",
            injected=f"SIGKILL to the server after {ACKNOWLEDGED_BEFORE_KILL} writes were acknowledged, {CLIENTS} "
            "clients writing; restart on the same database",
            notes=f"{found.unacknowledged_stored} label(s) stored whose answer the kill cut off",
        )
    )
    found.assert_nothing_lost()
