"""What routes receive: objects the lifespan put on ``app.state``, as ``Annotated`` dependency aliases.

Tests replace any of them with ``app.dependency_overrides[get_x] = ...``.
Before start-up has finished, asking for one gives a 503 ``not_ready``.
They are ``async`` only so FastAPI does not hop to a thread for an attribute read.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from annotations import AnnotationStore
from deepminer.bundle import Bundle
from service.auth import Authenticator, Principal
from service.errors import NotReadyError
from service.explainer import Explainer
from service.metrics import Metrics
from service.pool import InferencePool
from service.quality import BundleQuality
from service.queries import RegionQueries
from service.schemas import ErrorResponse
from service.settings import Settings
from service.units import UnitCatalog


def _from_state(request: Request, name: str) -> Any:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise NotReadyError("the service is starting: the model bundle is not loaded and warmed up yet")
    return value


async def get_settings(request: Request) -> Settings:
    return _from_state(request, "settings")  # type: ignore[no-any-return]


async def get_metrics(request: Request) -> Metrics:
    return _from_state(request, "metrics")  # type: ignore[no-any-return]


async def get_bundle(request: Request) -> Bundle:
    return _from_state(request, "bundle")  # type: ignore[no-any-return]


async def get_store(request: Request) -> AnnotationStore:
    return _from_state(request, "store")  # type: ignore[no-any-return]


async def get_catalog(request: Request) -> UnitCatalog:
    return _from_state(request, "catalog")  # type: ignore[no-any-return]


async def get_explainer(request: Request) -> Explainer:
    """The explainer, which the lifespan publishes only after the warm-up inference succeeded."""
    return _from_state(request, "explainer")  # type: ignore[no-any-return]


async def get_pool(request: Request) -> InferencePool:
    return _from_state(request, "pool")  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
BundleDep = Annotated[Bundle, Depends(get_bundle)]
StoreDep = Annotated[AnnotationStore, Depends(get_store)]
CatalogDep = Annotated[UnitCatalog, Depends(get_catalog)]
ExplainerDep = Annotated[Explainer, Depends(get_explainer)]
PoolDep = Annotated[InferencePool, Depends(get_pool)]


async def get_queries(request: Request) -> RegionQueries:
    return _from_state(request, "queries")  # type: ignore[no-any-return]


QueriesDep = Annotated[RegionQueries, Depends(get_queries)]


async def get_quality(request: Request) -> BundleQuality:
    """The bundle's explanation-quality report, read at start-up (its ``report`` is None when the bundle has none)."""
    return _from_state(request, "quality")  # type: ignore[no-any-return]


QualityDep = Annotated[BundleQuality, Depends(get_quality)]

# -- access -----------------------------------------------------------------

bearer = HTTPBearer(
    scheme_name="bearer",
    description=(
        "A token configured in DEEPMINER_TOKENS. DEEPMINER_AUTH=writes: needed to write labels (annotator role). "
        "DEEPMINER_AUTH=all: needed for every route but health, readiness and metrics (reader role; annotator to "
        "write). DEEPMINER_AUTH=off: ignored."
    ),
    auto_error=False,
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def get_authenticator(request: Request) -> Authenticator:
    return _from_state(request, "auth")  # type: ignore[no-any-return]


AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]


async def read_access(auth: AuthenticatorDep, credentials: BearerDep) -> Principal | None:
    """Who reads: anyone while reads are open (None), else a valid token of the reader role or above."""
    return auth.authorize(None if credentials is None else credentials.credentials, write=False)


async def write_access(auth: AuthenticatorDep, credentials: BearerDep) -> Principal | None:
    """Who writes labels: anyone while auth is off (None), else a valid token of the annotator role or above."""
    return auth.authorize(None if credentials is None else credentials.credentials, write=True)


ReaderDep = Annotated[Principal | None, Depends(read_access)]
AnnotatorDep = Annotated[Principal | None, Depends(write_access)]

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorResponse,
        "description": "`unauthorized`: no valid bearer token where DEEPMINER_AUTH needs one (WWW-Authenticate: Bearer)",
    },
    403: {"model": ErrorResponse, "description": "`forbidden`: the token's role is below the one needed"},
}
"""The responses every route behind :func:`read_access` may give."""
