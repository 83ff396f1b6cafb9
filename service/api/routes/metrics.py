"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.api.deps import MetricsDep

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
)
def metrics(collectors: MetricsDep) -> Response:
    """Expose request, latency, inference-stage and model metrics in the Prometheus text format."""
    return Response(content=collectors.render(), media_type=CONTENT_TYPE_LATEST)
