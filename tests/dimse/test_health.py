"""The listener's probes: ``/healthz`` and ``/readyz`` on its metrics port, over real HTTP, with the real Storage SCP,
spool, outbox, result sender and a destination SCP on loopback (in-process), then in the listener process."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pydicom.dataset import Dataset

from service.dimse.health import DestinationCheck, ListenerHealth, probe_app
from service.dimse.listener import start_scp
from service.dimse.metrics import DimseMetrics, serve_http
from service.dimse.outbox import Outbox
from service.dimse.scp import OUT_OF_RESOURCES, SUCCESS, StorageScp
from service.dimse.sender import Destination, ResultSender
from service.dimse.settings import DimseSettings
from service.dimse.spool import Spool
from tests.dimse.conftest import (
    CALLED,
    CALLING,
    DESTINATION,
    DestinationScp,
    ListenerProcess,
    associate,
    encoded,
    free_port,
)


def load_healthcheck() -> ModuleType:
    """The image's health-check script (docker/healthcheck.py, standard library only) as a module."""
    path = Path(__file__).resolve().parents[2] / "docker" / "healthcheck.py"
    spec = importlib.util.spec_from_file_location("deepminer_image_healthcheck", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get(port: int, path: str, *, method: str = "GET") -> tuple[int, Any]:
    """The status and the JSON (or the text, for /metrics) of one request."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, body, kind = answer.status, answer.read(), answer.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        status, body, kind = exc.code, exc.read(), exc.headers["Content-Type"]
    return status, json.loads(body) if kind == "application/json" else body.decode()


def codes(body: dict[str, Any]) -> list[str]:
    return [problem["code"] for problem in body.get("problems", [])]


@dataclass
class Probed:
    """The listener's pieces as ``serve`` wires them, minus the model: SCP, spool, outbox, sender, probes."""

    port: int
    http_port: int
    spool: Spool
    outbox: Outbox
    stop: threading.Event
    scp: Any
    threads: dict[str, threading.Thread]
    scp_stopped: bool = False

    def stop_scp(self) -> None:
        """Shut the Storage SCP down (its acceptor thread ends); once only, as pynetdicom allows."""
        if not self.scp_stopped:
            self.scp_stopped = True
            self.scp.shutdown()

    def store(self, ds: Dataset) -> int:
        with associate(self.port) as assoc:
            assert assoc.is_established
            return int(assoc.send_c_store(ds).Status)


@pytest.fixture
def probed(tmp_path: Path, destination: DestinationScp) -> Iterator[Callable[..., Probed]]:
    """``probed(spool_dir=..., max_spool_bytes=..., max_age_s=...)``: the pieces serving until the test ends."""
    cleanup: list[Callable[[], object]] = []

    def start(*, spool_dir: Path | None = None, max_spool_bytes: int = 1 << 30, max_age_s: float = 30.0) -> Probed:
        settings = DimseSettings(
            port=free_port(),
            allowed_calling_ae_titles=[CALLING],
            spool_dir=spool_dir or tmp_path / "spool",
            max_spool_bytes=max_spool_bytes,
        )
        spool, outbox = Spool(settings.spool_dir, max_bytes=max_spool_bytes), Outbox(settings.spool_dir)
        metrics = DimseMetrics()
        metrics.watch_spool(spool.depth, lambda: spool.bytes)
        scp, acceptor = start_scp(StorageScp(settings, spool=spool, metrics=metrics))
        target = Destination(ae_title=DESTINATION, host="127.0.0.1", port=destination.port, calling_ae_title=CALLED)
        sender = ResultSender(outbox=outbox, destination=target, metrics=metrics, retries=1, backoff_s=0.1)
        stop = threading.Event()
        sending = threading.Thread(target=sender.run, args=(stop,), kwargs={"poll_s": 0.1}, name="sender")
        sending.start()
        cleanup.extend([sending.join, stop.set])
        check = DestinationCheck(target, max_age_s=max_age_s)
        metrics.watch_destination(lambda: float(check.state().up))
        threads = {"scp": acceptor, "sender": sending}
        health = ListenerHealth(spool=spool, outbox=outbox, threads=threads, destination=check)
        http, _ = serve_http("127.0.0.1", 0, probe_app(health, metrics.wsgi_app()))
        cleanup.append(http.shutdown)
        started = Probed(settings.port, http.server_address[1], spool, outbox, stop, scp, threads)
        cleanup.insert(0, started.stop_scp)
        return started

    try:
        yield start
    finally:
        for step in reversed(cleanup):
            step()


def test_readyz_reports_the_spool_the_outbox_and_a_reachable_destination(
    probed: Callable[..., Probed], destination: DestinationScp, new_instance: Callable[[], Dataset]
) -> None:
    destination.start()  # offers the results' SOP classes but not Verification, as some PACS do
    listener = probed()
    assert listener.store(new_instance()) == SUCCESS

    status, body = get(listener.http_port, "/readyz")
    assert status == 200 and body["status"] == "ready" and "problems" not in body
    spool = body["spool"]
    assert spool["depth"] == 1 and spool["bytes"] == listener.spool.bytes > 0
    assert spool["max_bytes"] == 1 << 30 and spool["writable"] is True and spool["disk_free_bytes"] > 0
    assert body["outbox"] == {"depth": 0} and body["dead_letter"] == {"depth": 0}
    reached = body["destination"]
    assert (reached["ae_title"], reached["port"], reached["up"]) == (DESTINATION, destination.port, True)
    assert "accepts the results" in reached["reason"]
    assert not [p for p in listener.spool.incoming.iterdir() if p.name.startswith(".")], "the write test is removed"

    _, metrics = get(listener.http_port, "/metrics")
    assert "deepminer_dimse_destination_up 1.0" in metrics and "deepminer_dimse_spool_depth 1.0" in metrics

    status, alive = get(listener.http_port, "/healthz")
    assert status == 200 and alive == {"status": "alive", "threads": {"scp": True, "sender": True}}


def test_a_spool_near_its_limit_is_unready_and_ready_again_once_drained(
    probed: Callable[..., Probed], new_instance: Callable[[], Dataset]
) -> None:
    first, second = new_instance(), new_instance()
    listener = probed(max_spool_bytes=len(encoded(first)) + 4096)  # one instance fills it past 95 %
    assert get(listener.http_port, "/readyz")[0] == 200
    assert listener.store(first) == SUCCESS

    status, body = get(listener.http_port, "/readyz")
    assert status == 503 and body["status"] == "unready" and codes(body) == ["spool_full"]
    assert str(listener.spool.bytes) in body["problems"][0]["message"]
    assert listener.store(second) == OUT_OF_RESOURCES  # what unready spares the sender

    listener.spool.remove(listener.spool.pending()[0])  # as the worker does once the results are committed
    status, body = get(listener.http_port, "/readyz")
    assert status == 200 and body["spool"]["depth"] == 0


def test_an_unreachable_destination_is_reported_but_leaves_the_listener_ready(
    probed: Callable[..., Probed], destination: DestinationScp
) -> None:
    listener = probed(max_age_s=1.0)  # the destination is not started: nothing listens on its port
    status, body = get(listener.http_port, "/readyz")
    assert status == 200 and body["destination"]["up"] is False
    assert "unreachable" in body["destination"]["reason"]
    assert "deepminer_dimse_destination_up 0.0" in get(listener.http_port, "/metrics")[1]

    destination.start()
    assert get(listener.http_port, "/readyz")[1]["destination"]["up"] is False  # the cached check, within 1 s
    time.sleep(1.1)
    assert get(listener.http_port, "/readyz")[1]["destination"]["up"] is True
    assert "deepminer_dimse_destination_up 1.0" in get(listener.http_port, "/metrics")[1]


def test_a_full_disk_makes_the_spool_unwritable_and_the_listener_unready(
    tiny_disk: Callable[[str], Path], probed: Callable[..., Probed], new_instance: Callable[[], Dataset]
) -> None:  # the disk first, so that it is unmounted after the listener's pieces stopped
    disk = tiny_disk("4m")
    listener = probed(spool_dir=disk / "spool")
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass

    status, body = get(listener.http_port, "/readyz")
    assert status == 503 and codes(body) == ["spool_not_writable"] and body["spool"]["writable"] is False
    assert "No space left on device" in body["problems"][0]["message"]
    assert listener.store(new_instance()) == OUT_OF_RESOURCES

    filler.unlink()
    assert get(listener.http_port, "/readyz")[0] == 200


def test_healthz_names_a_stopped_thread(probed: Callable[..., Probed]) -> None:
    listener = probed()
    listener.stop.set()
    listener.threads["sender"].join(timeout=10)
    status, body = get(listener.http_port, "/healthz")
    assert status == 503 and body["threads"] == {"scp": True, "sender": False}
    assert body["problems"] == [{"code": "thread_stopped", "message": "the sender thread has stopped"}]

    listener.stop_scp()
    listener.threads["scp"].join(timeout=10)
    assert get(listener.http_port, "/healthz")[1]["threads"] == {"scp": False, "sender": False}


def test_probes_answer_get_only_and_other_paths_stay_metrics(probed: Callable[..., Probed]) -> None:
    listener = probed()
    status, body = get(listener.http_port, "/readyz", method="POST")
    assert status == 405 and codes(body) == ["method_not_allowed"]
    assert "deepminer_dimse_spool_bytes" in get(listener.http_port, "/metrics")[1]


@pytest.mark.slow
def test_the_listener_process_serves_its_probes(
    listener: ListenerProcess, destination: DestinationScp, new_instance: Callable[[], Dataset]
) -> None:
    destination.start()
    listener.start()
    status, body = get(listener.metrics_port, "/healthz")
    assert status == 200 and body["threads"] == {"scp": True, "worker": True, "sender": True}

    # The image's HEALTHCHECK, run without a URL, asks the listener when PID 1 is the listener (here: its process).
    assert listener.process is not None
    healthcheck = load_healthcheck()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DEEPMINER_DIMSE_METRICS_PORT", str(listener.metrics_port))
        env.setenv("DEEPMINER_PORT", "1")  # nothing there: the API's URL would fail
        url = healthcheck.default_url(Path(f"/proc/{listener.process.pid}/cmdline"))
        assert url == f"http://127.0.0.1:{listener.metrics_port}/healthz"
        assert healthcheck.main(["healthcheck.py", url]) == 0
        assert healthcheck.default_url(Path(f"/proc/{os.getpid()}/cmdline")) == "http://127.0.0.1:1/healthz"

    with associate(listener.port) as assoc:
        assert assoc.send_c_store(new_instance()).Status == SUCCESS
    deadline = time.monotonic() + 120
    while not any((listener.spool_dir / "delivered").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    status, body = get(listener.metrics_port, "/readyz")
    assert status == 200 and body["status"] == "ready"
    assert body["spool"]["depth"] == 0 and body["outbox"]["depth"] == 0 and body["destination"]["up"] is True
    assert len(destination.received) == 3, "the SR, the Secondary Capture and the presentation state"
    assert listener.stop() == 0
