"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ExplainerDep, StoreDep
from service.schemas import ErrorResponse, Liveness, ModelOut, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Liveness)
async def healthz() -> Liveness:
    """Answer as long as the process serves requests."""
    return Liveness()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorResponse}})
def readyz(explainer: ExplainerDep, store: StoreDep) -> Readiness:
    """Answer 200 once the bundle is loaded and warmed up and the unit-label store responds, else 503."""
    store.ping()
    return Readiness(model=ModelOut.from_info(explainer.model))
