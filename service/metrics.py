"""Prometheus collectors of one app, on the app's own registry (tests build many apps per process).

Several server processes (``DEEPMINER_WORKERS`` > 1, or any process manager)
each count only their own requests. Set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory writable by every process, in their environment before they
start: prometheus_client then keeps each process's values in files there, and
/metrics, whichever process answers it, adds them up (counters and histograms
summed; gauges summed over live processes, model info as the maximum). Empty
the directory whenever the whole service restarts; a process that stops
cleanly removes its gauges from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from service.explainer import ModelInfo

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_MODEL_LABELS = ("model_id", "hash", "backend", "provider", "device", "precision")
"""Labels of ``deepminer_model_info``: the model's id, then attributes of :class:`ModelInfo` of the same name."""


def multiprocess_dir() -> str | None:
    """The multiprocess directory when prometheus_client runs in multiprocess mode, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The service's metric families; ``render()`` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "deepminer_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "deepminer_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = self._live_gauge("deepminer_http_requests_in_flight", "HTTP requests being served.")
        self.errors = Counter(
            "deepminer_errors",
            "Error responses by error code (the `code` of the JSON error body) and status.",
            ["code", "status"],
            registry=self.registry,
        )
        self.stages = Histogram(
            "deepminer_inference_stage_seconds",
            "Time per explanation stage (queue, decode, preprocess, inference, explain, annotations, encode, total).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = self._live_gauge(
            "deepminer_inference_queue_depth",
            "Explanations admitted that do not hold an inference worker (uploading or waiting).",
        )
        self.inference_in_flight = self._live_gauge(
            "deepminer_inference_in_flight", "Explanations running on an inference worker."
        )
        self.batch_size = Histogram(
            "deepminer_inference_batch_size",
            "Images per backend call when micro-batching is on (batch_max_size > 1).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "deepminer_model_info",
            "The loaded model bundle and inference engine (value 1).",
            list(_MODEL_LABELS),
            registry=self.registry,
            multiprocess_mode="livemax",
        )

    def _live_gauge(self, name: str, documentation: str) -> Gauge:
        """A gauge of this registry that, across processes, sums the live processes' values."""
        return Gauge(name, documentation, registry=self.registry, multiprocess_mode="livesum")

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route, method=method).observe(seconds)

    def observe_stages(self, timings_ms: Mapping[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stages.labels(stage=stage).observe(ms / 1000.0)

    def observe_error(self, *, code: str, status: int) -> None:
        self.errors.labels(code=code, status=str(status)).inc()

    def observe_pool(self, waiting: int, running: int) -> None:
        """The inference pool's counts (its ``on_change`` callback)."""
        self.queue_depth.set(waiting)
        self.inference_in_flight.set(running)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def set_model(self, model: ModelInfo) -> None:
        self.model_info.clear()
        self.model_info.labels(model_id=model.id, **{name: getattr(model, name) for name in _MODEL_LABELS[1:]}).set(1)

    def render(self) -> bytes:
        """The text exposition: this app's registry, or every process's values in multiprocess mode."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry)

    def close(self) -> None:
        """In multiprocess mode, drop this process's live gauges from the shared directory."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())
