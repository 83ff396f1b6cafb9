"""What routes receive: objects the lifespan put on ``app.state``, as ``Annotated`` dependency aliases.

Tests replace any of them with ``app.dependency_overrides[get_x] = ...``.
Each getter checks the type of what it reads, so routes receive typed objects
and nothing here needs a ``type: ignore``. Before start-up has finished,
asking for one gives a 503 ``not_ready``.
They are ``async`` only so FastAPI does not hop to a thread for an attribute read.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

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
from service.units import UnitCatalog, UnitPatchRenderer

T = TypeVar("T")
StateGetter = Callable[[Request], Coroutine[Any, Any, T]]


def _from_state(request: Request, name: str, kind: type[T]) -> T:
    """``app.state.<name>``, checked to be a ``kind``; 503 ``not_ready`` while start-up has not published it."""
    value = getattr(request.app.state, name, None)
    if value is None:
        raise NotReadyError("the service is starting: the model bundle is not loaded and warmed up yet")
    if not isinstance(value, kind):
        raise TypeError(f"app.state.{name} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _state_getter(name: str, kind: type[T], doc: str) -> StateGetter[T]:
    """The dependency that reads ``app.state.<name>``; tests override it by this function."""

    async def get(request: Request) -> T:
        return _from_state(request, name, kind)

    get.__name__ = get.__qualname__ = f"get_{name}"
    get.__doc__ = doc
    return get


get_settings = _state_getter("settings", Settings, "The service's settings.")
get_metrics = _state_getter("metrics", Metrics, "The Prometheus collectors.")
get_bundle = _state_getter("bundle", Bundle, "The loaded, verified model bundle.")
get_store = _state_getter("store", AnnotationStore, "The unit-label store.")
get_catalog = _state_getter("catalog", UnitCatalog, "The unit catalogue (rankings joined with labels).")
get_explainer = _state_getter(
    "explainer", Explainer, "The explainer, which the lifespan publishes only after the warm-up inference succeeded."
)
get_pool = _state_getter("pool", InferencePool, "The bounded inference worker pool.")
get_queries = _state_getter("queries", RegionQueries, "The region queries.")
get_quality = _state_getter(
    "quality",
    BundleQuality,
    "The bundle's explanation-quality report, read at start-up (its ``report`` is None when the bundle has none).",
)
get_unit_patches = _state_getter(
    "unit_patches", UnitPatchRenderer, "Top patches of units outside the ranked set, rendered on demand."
)
get_authenticator = _state_getter("auth", Authenticator, "Tokens and roles (DEEPMINER_AUTH).")

SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
BundleDep = Annotated[Bundle, Depends(get_bundle)]
StoreDep = Annotated[AnnotationStore, Depends(get_store)]
CatalogDep = Annotated[UnitCatalog, Depends(get_catalog)]
ExplainerDep = Annotated[Explainer, Depends(get_explainer)]
PoolDep = Annotated[InferencePool, Depends(get_pool)]
QueriesDep = Annotated[RegionQueries, Depends(get_queries)]
QualityDep = Annotated[BundleQuality, Depends(get_quality)]
AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]
UnitPatchesDep = Annotated[UnitPatchRenderer, Depends(get_unit_patches)]


async def bundle_file_url(request: Request) -> Callable[[str], str]:
    """Turns a path inside the bundle into the URL of ``GET /bundle-files/{path}`` that serves it."""

    def url(path: str) -> str:
        return str(request.url_for("bundle_file", path=path))

    return url


BundleFileUrlDep = Annotated[Callable[[str], str], Depends(bundle_file_url)]

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
