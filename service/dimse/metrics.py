"""The listener's Prometheus collectors, on its own registry, and the HTTP server of ``/metrics`` and the probes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, make_wsgi_app

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


class DimseMetrics:
    """Associations, instances received and explained, results sent, and the spool's depth and size."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.associations = Counter(
            "deepminer_dimse_associations",
            "Association requests by outcome: accepted, or rejected (a calling or called AE title not allowed).",
            ["outcome"],
            registry=self.registry,
        )
        self.received = Counter(
            "deepminer_dimse_instances_received",
            "C-STORE requests by answer: success (spooled), out_of_resources (A700), cannot_understand, failed.",
            ["status"],
            registry=self.registry,
        )
        self.explained = Counter(
            "deepminer_dimse_instances_explained",
            "Spooled instances by worker outcome: explained (results committed), duplicate (already explained "
            "under this bundle), failed (never explainable, moved to failed/), retry (a passing fault).",
            ["outcome"],
            registry=self.registry,
        )
        self.results = Counter(
            "deepminer_dimse_results",
            "Result sets (SR, Secondary Capture, presentation state of one instance) sent back by C-STORE, by "
            "outcome: sent (all acknowledged), retried (a try failed, another follows), dead_lettered (given up).",
            ["outcome"],
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            "deepminer_dimse_spool_depth", "Instances acknowledged and waiting to be explained.", registry=self.registry
        )
        self.spool_bytes = Gauge(
            "deepminer_dimse_spool_bytes", "Bytes of the instances waiting to be explained.", registry=self.registry
        )

        self.outbox_depth = Gauge(
            "deepminer_dimse_outbox_depth",
            "Explained instances whose results the destination has not acknowledged yet.",
            registry=self.registry,
        )
        self.dead_letter_depth = Gauge(
            "deepminer_dimse_dead_letter_depth",
            "Instances whose results were given up on, waiting in dead-letter/ for an operator.",
            registry=self.registry,
        )
        self.destination_up: Gauge | None = None

    def watch_spool(self, depth: Callable[[], float], size: Callable[[], float]) -> None:
        """Read the spool's depth and size at every scrape."""
        self.spool_depth.set_function(depth)
        self.spool_bytes.set_function(size)

    def watch_outbox(self, depth: Callable[[], float], dead_letter: Callable[[], float]) -> None:
        """Read the outbox's depth and the dead-letter folder's at every scrape."""
        self.outbox_depth.set_function(depth)
        self.dead_letter_depth.set_function(dead_letter)

    def watch_destination(self, up: Callable[[], float]) -> None:
        """Read whether the results' destination answers at every scrape; only a listener with one has the gauge."""
        self.destination_up = Gauge(
            "deepminer_dimse_destination_up",
            "1 when the results' destination accepted the last check's association (and C-ECHO), else 0; "
            "checked at most every 30 s.",
            registry=self.registry,
        )
        self.destination_up.set_function(up)

    def wsgi_app(self) -> WSGIApplication:
        """The text exposition as a WSGI app (any path)."""
        return make_wsgi_app(self.registry)  # type: ignore[no-any-return]

    def render(self) -> bytes:
        """The text exposition."""
        return generate_latest(self.registry)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scrape never holds up a probe."""

    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    """The same on an IPv6 address such as ``::``."""

    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: probes come every few seconds and the listener's logs are JSON lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_http(host: str, port: int, app: WSGIApplication) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``app`` on ``host:port`` from a daemon thread; ``shutdown()`` on the server stops it."""
    server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
    server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server, thread
