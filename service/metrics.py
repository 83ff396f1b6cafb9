"""Prometheus collectors of one app, on the app's own registry (tests build many apps per process)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.explainer import ModelInfo

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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
        self.in_flight = Gauge(
            "deepminer_http_requests_in_flight", "HTTP requests being served.", registry=self.registry
        )
        self.stages = Histogram(
            "deepminer_inference_stage_seconds",
            "Time per explanation stage (queue, decode, preprocess, forward, explain, annotations, total).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.model_info = Gauge(
            "deepminer_model_info",
            "The loaded model bundle and inference engine (value 1).",
            ["model_id", "hash", "backend", "provider"],
            registry=self.registry,
        )

    def observe_request(self, *, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route, method=method).observe(seconds)

    def observe_stages(self, timings_ms: Mapping[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stages.labels(stage=stage).observe(ms / 1000.0)

    def set_model(self, model: ModelInfo) -> None:
        self.model_info.clear()
        self.model_info.labels(model_id=model.id, hash=model.hash, backend=model.backend, provider=model.provider).set(
            1
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
