"""The listener process: load the explainer, serve the Storage SCP, the metrics and the probes, explain the spool
and send the results (when a destination is set) until stopped."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import ExitStack

from pynetdicom.transport import ThreadedAssociationServer

from deepminer.bundle import load_bundle
from service.dimse.health import DestinationCheck, ListenerHealth, probe_app
from service.dimse.metrics import DimseMetrics, serve_http
from service.dimse.outbox import Outbox
from service.dimse.scp import StorageScp
from service.dimse.sender import Destination, ResultSender
from service.dimse.settings import DimseSettings
from service.dimse.spool import Spool
from service.dimse.worker import SpoolWorker
from service.loading import load_explainer, software_version
from service.logging import configure_logging
from service.pacs.equipment import Equipment
from service.settings import Settings, settings_from_environment

log = logging.getLogger(__name__)


def start_scp(scp: StorageScp) -> tuple[ThreadedAssociationServer, threading.Thread]:
    """Serve ``scp`` and return its server and its acceptor thread, which ``/healthz`` watches.

    pynetdicom starts one thread per server, named ``AcceptorServer@<time>``, and keeps no reference to it: it is
    the one of that name that did not run before.
    """
    before = set(threading.enumerate())
    server = scp.start()
    started = [t for t in threading.enumerate() if t not in before and t.name.startswith("AcceptorServer@")]
    if len(started) != 1:
        server.shutdown()
        raise RuntimeError(f"expected one acceptor thread of the Storage SCP, found {[t.name for t in started]}")
    return server, started[0]


def serve(settings: Settings, dimse: DimseSettings, stop: threading.Event) -> None:
    """Run the listener until ``stop`` is set; what was spooled before a crash is explained first."""
    spool = Spool(dimse.spool_dir, max_bytes=dimse.max_spool_bytes)
    outbox = Outbox(dimse.spool_dir)
    metrics = DimseMetrics()
    metrics.watch_spool(spool.depth, lambda: spool.bytes)
    metrics.watch_outbox(lambda: len(outbox.committed()), lambda: sum(1 for _ in outbox.dead_letter.iterdir()))
    bundle = load_bundle(settings.bundle)
    with ExitStack() as stack:
        loaded = load_explainer(settings, bundle, stack)
        worker = SpoolWorker(
            spool=spool,
            outbox=outbox,
            explainer=loaded.explainer,
            equipment=Equipment.for_model(loaded.explainer.model, software_version=software_version()),
            metrics=metrics,
            retry_s=dimse.retry_s,
        )
        server, acceptor = start_scp(StorageScp(dimse, spool=spool, metrics=metrics))
        stack.callback(server.shutdown)
        threads = {"scp": acceptor, "worker": threading.current_thread()}  # the worker runs on this thread
        check: DestinationCheck | None = None
        if dimse.destination_ae_title is not None:
            destination = Destination(
                ae_title=dimse.destination_ae_title,
                host=dimse.destination_host,
                port=dimse.destination_port,
                calling_ae_title=dimse.ae_title,
                timeout_s=dimse.send_timeout_s,
            )
            sender = ResultSender(
                outbox=outbox,
                destination=destination,
                metrics=metrics,
                retries=dimse.send_retries,
                backoff_s=dimse.send_backoff_s,
            )
            sending = threading.Thread(target=sender.run, args=(stop,), kwargs={"poll_s": dimse.poll_s}, name="sender")
            sending.start()
            threads["sender"] = sending
            stack.callback(sending.join)
            stack.callback(stop.set)  # runs first: the sender ends its try and stops, whatever ended the worker
            check = checked = DestinationCheck(destination)
            metrics.watch_destination(lambda: float(checked.state().up))
        if dimse.metrics_port:
            health = ListenerHealth(spool=spool, outbox=outbox, threads=threads, destination=check)
            http, _ = serve_http(dimse.host, dimse.metrics_port, probe_app(health, metrics.wsgi_app()))
            stack.callback(http.shutdown)
        log.info(
            "listening",
            extra={
                "fields": {
                    "event": "dimse_ready",
                    "ae_title": dimse.ae_title,
                    "port": server.server_address[1],
                    "metrics_port": dimse.metrics_port,
                    "model_id": bundle.id,
                    "spooled": spool.depth(),
                    "warm_up_ms": round(loaded.warm_up_ms, 1),
                }
            },
        )
        worker.run(stop, poll_s=dimse.poll_s)
    log.info("stopped", extra={"fields": {"event": "dimse_stopped"}})


def main() -> None:
    """``python -m service.dimse``: settings from ``DEEPMINER_*`` and ``DEEPMINER_DIMSE_*``; SIGTERM stops it."""
    settings = settings_from_environment(Settings)
    configure_logging(settings.log_level)
    dimse = settings_from_environment(DimseSettings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(settings, dimse, stop)
