"""The listener process: load the explainer, serve the Storage SCP and metrics, explain the spool and send the
results (when a destination is set) until stopped."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import ExitStack

from prometheus_client import start_http_server

from deepminer.bundle import load_bundle
from service.dimse.metrics import DimseMetrics
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
        if dimse.metrics_port:
            http, _ = start_http_server(dimse.metrics_port, addr=dimse.host, registry=metrics.registry)
            stack.callback(http.shutdown)
        server = StorageScp(dimse, spool=spool, metrics=metrics).start()
        stack.callback(server.shutdown)
        log.info(
            "listening",
            extra={
                "fields": {
                    "event": "dimse_ready",
                    "ae_title": dimse.ae_title,
                    "port": server.server_address[1],
                    "model_id": bundle.id,
                    "spooled": spool.depth(),
                    "warm_up_ms": round(loaded.warm_up_ms, 1),
                }
            },
        )
        if dimse.destination_ae_title is not None:
            sender = ResultSender(
                outbox=outbox,
                destination=Destination(
                    ae_title=dimse.destination_ae_title,
                    host=dimse.destination_host,
                    port=dimse.destination_port,
                    calling_ae_title=dimse.ae_title,
                    timeout_s=dimse.send_timeout_s,
                ),
                metrics=metrics,
                retries=dimse.send_retries,
                backoff_s=dimse.send_backoff_s,
            )
            sending = threading.Thread(target=sender.run, args=(stop,), kwargs={"poll_s": dimse.poll_s}, name="sender")
            sending.start()
            stack.callback(sending.join)
            stack.callback(stop.set)  # runs first: the sender ends its try and stops, whatever ended the worker
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
