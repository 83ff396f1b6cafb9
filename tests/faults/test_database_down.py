"""PostgreSQL stopped while clients write labels, then started again (a throwaway cluster, never the shared server).

During the outage every write is answered 503 ``store_unavailable`` with
Retry-After, ``/readyz`` says the store is down, and ``/explain`` keeps
answering, its labels marked unavailable. Once the database is back the
service recovers by itself, and every label answered 201, before, during or
after, reads back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.faults.cluster import Cluster
from tests.faults.conftest import FaultRow, Servers
from tests.faults.writers import LabelWriters, read_back
from tests.pacs.conftest import fake_pacs, make_mammogram  # noqa: F401 - fake_pacs is a fixture used here

CLIENTS = 4
OUTAGE_S = 4.0
ACKNOWLEDGED_BEFORE = 60  # writes answered 201 before the database stops


@dataclass(frozen=True)
class Probe:
    """One request of the prober: what it asked, when, and what it was answered."""

    path: str
    started: float
    ended: float
    status: int | None
    body: dict[str, Any] | None


class Prober:
    """A thread that asks ``/readyz`` and ``POST /explain`` in turn until stopped."""

    def __init__(self, base_url: str, image: bytes) -> None:
        self.base_url = base_url
        self.image = image
        self.probes: list[Probe] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60.0) as http:
            while not self._stop.is_set():
                for path in ("/readyz", "/explain"):
                    started = time.monotonic()
                    if path == "/explain":
                        response = http.post(path, files={"file": ("m.png", self.image, "image/png")})
                    else:
                        response = http.get(path)
                    body = response.json() if response.headers.get("content-type") == "application/json" else None
                    self.probes.append(Probe(path, started, time.monotonic(), response.status_code, body))
                time.sleep(0.1)


def test_postgres_outage_is_named_and_loses_no_acknowledged_label(
    postgres_cluster: Cluster,
    cluster_database: str,
    servers: Servers,
    phantom_png: bytes,
    fault_table: Callable[[FaultRow], None],
) -> None:
    server = servers.start(cluster_database)
    with LabelWriters(server.base_url, clients=CLIENTS) as writers, Prober(server.base_url, phantom_png) as prober:
        writers.wait_for(lambda attempts: sum(a.acknowledged for a in attempts) >= ACKNOWLEDGED_BEFORE)
        stopping = time.monotonic()
        postgres_cluster.stop()
        down = time.monotonic()  # from here until `starting`, nothing can reach the database
        time.sleep(OUTAGE_S)
        starting = time.monotonic()
        postgres_cluster.start()
        up = time.monotonic()
        # Recovered: a write after the restart is acknowledged again, and the probes say ready.
        writers.wait_for(lambda attempts: sum(a.acknowledged and a.started > up for a in attempts) >= 20)
        deadline = time.monotonic() + 30
        while not any(p.path == "/readyz" and p.started > up and p.status == 200 for p in prober.probes):
            assert time.monotonic() < deadline, "/readyz did not recover within 30 s of the database's restart"
            time.sleep(0.1)
    attempts = writers.stop()
    probes = list(prober.probes)

    # Every answer is 201 or the named 503 with Retry-After; nothing else, in particular no 500.
    refused = [a for a in attempts if not a.acknowledged]
    assert {a.answer for a in refused} <= {"503 store_unavailable"}, {a.answer for a in refused}
    assert all(a.retry_after is not None and int(a.retry_after) > 0 for a in refused)
    # Every write made while the database was down was refused.
    during = [a for a in attempts if a.started >= down and a.ended <= starting]
    assert during and not any(a.acknowledged for a in during)

    def outage(path: str) -> list[Probe]:
        return [p for p in probes if p.path == path and p.started >= down and p.ended <= starting]

    readiness = outage("/readyz")
    assert readiness and all(
        p.status == 503 and p.body is not None and p.body["error"]["code"] == "store_unavailable" for p in readiness
    )
    explained = outage("/explain")
    assert explained and all(p.status == 200 for p in explained), [(p.status, p.body) for p in explained]
    assert all(p.body is not None and p.body["explanation"]["labels_available"] is False for p in explained)
    after = [p for p in probes if p.path == "/explain" and p.started > up and p.status == 200]
    assert all(p.body is not None and p.body["explanation"]["labels_available"] is True for p in after)

    found = read_back(server.base_url, attempts)
    ready_again_s = min(p.ended for p in probes if p.path == "/readyz" and p.started > up and p.status == 200) - up
    fault_table(
        FaultRow.of_writes(
            found,
            fault="PostgreSQL down",
            injected=f"pg_ctl stop -m fast, {OUTAGE_S:g} s down, pg_ctl start; {CLIENTS} clients writing labels",
            notes=(
                f"{len(during)} writes during the outage, all 503; /readyz 503 store_unavailable "
                f"{len(readiness)}×, ready {ready_again_s:.1f} s after the restart; /explain 200 "
                f"{len(explained)}× during it, labels unavailable; stop took {down - stopping:.2f} s; "
                f"{found.unacknowledged_stored} label(s) stored although answered 503"
            ),
        )
    )
    found.assert_nothing_lost()


def test_no_pacs_result_is_stored_without_its_labels(
    postgres_cluster: Cluster, cluster_database: str, tiny_bundle: Path, fake_pacs: Any, phantom_png: bytes
) -> None:
    """While PostgreSQL is down /dicomweb/explain stores nothing (503 store_unavailable), since a DICOM result in
    the study stays in the patient's record; asked not to store, it answers as /explain does, labels unavailable."""
    uids = fake_pacs.add(make_mammogram(phantom_png))
    ask = {"study_uid": uids[0], "series_uid": uids[1], "sop_uid": uids[2]}
    settings = Settings(bundle=tiny_bundle, database_url=cluster_database, dicomweb_url=fake_pacs.url)
    with TestClient(create_app(settings)) as client:
        postgres_cluster.stop()
        try:
            refused = client.post("/dicomweb/explain", json={**ask, "store_results": True})
            explained = client.post("/dicomweb/explain", json={**ask, "store_results": False})
        finally:
            postgres_cluster.start()
        stored = client.post("/dicomweb/explain", json={**ask, "store_results": True})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"
    assert refused.headers["retry-after"] == "5"
    assert explained.status_code == 200 and explained.json()["explanation"]["labels_available"] is False
    assert stored.status_code == 200 and stored.json()["explanation"]["labels_available"] is True
    assert fake_pacs.count("POST") == 1  # the results of the third request only
