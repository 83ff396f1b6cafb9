"""The listener's Prometheus collectors, on its own registry, served by prometheus_client's HTTP server."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


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

    def watch_spool(self, depth: Callable[[], float], size: Callable[[], float]) -> None:
        """Read the spool's depth and size at every scrape."""
        self.spool_depth.set_function(depth)
        self.spool_bytes.set_function(size)

    def watch_outbox(self, depth: Callable[[], float], dead_letter: Callable[[], float]) -> None:
        """Read the outbox's depth and the dead-letter folder's at every scrape."""
        self.outbox_depth.set_function(depth)
        self.dead_letter_depth.set_function(dead_letter)

    def render(self) -> bytes:
        """The text exposition."""
        return generate_latest(self.registry)
