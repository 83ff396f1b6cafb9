"""The FastAPI application: :func:`create_app` builds it, its lifespan loads the heavy parts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute

from deepminer.bundle import BundleError, load_bundle
from service.api.deps import AUTH_RESPONSES, read_access
from service.api.errors import register_error_handlers
from service.api.middleware import RequestMiddleware
from service.api.routes import dicomweb, explain, health, methods, metrics, pages, quality, queries, suspicious, units
from service.auth import load_authenticator
from service.loading import load_explainer, software_version
from service.logging import configure_logging
from service.methods import METHODS
from service.metrics import Metrics, multiprocess_dir
from service.pool import InferencePool
from service.quality import load_quality
from service.queries import RegionQueries
from service.settings import Settings, settings_from_environment
from service.units import UnitPatchRenderer

log = logging.getLogger(__name__)

TITLE = "DeepMiner service"
DESCRIPTION = (
    "Explained mammogram classifications: class probability maps, the class activation map and the most "
    "influential layer4 units with their expert labels (DeepMiner), plus the unit-label API. "
    'Every error is `{"error": {"code", "message", "field"}}`.'
)


def _operation_id(route: APIRoute) -> str:
    """Stable operationIds: ``<first tag>-<function name>``."""
    return f"{route.tags[0]}-{route.name}"


def _start(app: FastAPI, settings: Settings) -> None:
    """Load and verify the bundle, create backend and store, seed labels, warm up; then publish on app.state.

    Blocking (hashing, model loading, database), so the lifespan runs it in a thread.
    """
    authenticator = load_authenticator(settings)  # a bad token configuration stops start-up before anything loads
    bundle = load_bundle(settings.bundle)
    log.info("bundle verified", extra={"fields": {"event": "bundle_loaded", "model_id": bundle.id}})
    report = load_quality(bundle)  # small, and read once: the bundle is immutable; a broken report stops start-up
    with ExitStack() as cleanup:  # undoes what was built if a later step fails
        loaded = load_explainer(settings, bundle, cleanup, on_batch=app.state.metrics.observe_batch)
        cleanup.pop_all()  # started: app.state owns them now, _stop closes them
    backend, store, catalog, explainer = loaded.backend, loaded.store, loaded.catalog, loaded.explainer
    warm_ms = loaded.warm_up_ms
    app.state.bundle = bundle
    app.state.quality = report
    app.state.backend = backend
    app.state.store = store
    app.state.catalog = catalog
    app.state.auth = authenticator
    app.state.queries = RegionQueries(explainer=explainer, catalog=catalog)
    app.state.unit_patches = UnitPatchRenderer(
        bundle=bundle, engine=explainer.engine, images_dir=settings.holdout_images_dir
    )
    app.state.pool = InferencePool(
        workers=settings.inference_workers,
        timeout_s=settings.request_timeout_s,
        max_queue=settings.max_queue,
        on_change=app.state.metrics.observe_pool,
    )
    app.state.metrics.set_model(explainer.model)
    # Published last: readiness and /explain key off it.
    app.state.explainer = explainer
    log.info(
        "ready",
        extra={
            "fields": {
                "event": "ready",
                "model_id": bundle.id,
                "backend": backend.name,
                "provider": backend.provider,
                "precision": backend.precision,
                "device": explainer.model.device,
                "batch_max_size": settings.batch_max_size,
                "warm_up_ms": round(warm_ms, 1),
            }
        },
    )


def _stop(app: FastAPI) -> None:
    app.state.explainer = None
    for name in ("store", "backend"):
        resource = getattr(app.state, name, None)
        if resource is not None:
            resource.close()
        setattr(app.state, name, None)
    app.state.metrics.close()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start-up and shut-down of one app; a failed start-up (e.g. :class:`BundleError`) stops the server."""
    settings: Settings = app.state.settings
    try:
        await anyio.to_thread.run_sync(_start, app, settings)
    except BundleError as exc:
        log.error("model bundle rejected: %s", exc, extra={"fields": {"event": "startup_failed"}})
        raise
    except Exception as exc:
        log.error("start-up failed: %s", exc, extra={"fields": {"event": "startup_failed"}})
        raise
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(_stop, app)


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app for ``settings`` (default: from the environment). Nothing heavy happens until its lifespan runs."""
    settings = settings or Settings()
    app = FastAPI(
        title=TITLE,
        description=DESCRIPTION,
        version=software_version(),
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.explainer = None
    register_error_handlers(app)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics)
    # Probes and scrapes stay open; everything else reads behind DEEPMINER_AUTH (writes check more, per route).
    # Registered explanation methods without a route of their own are served at POST /methods/{name}.
    served = methods.router_for(cls for cls in map(METHODS.get, METHODS.names()) if cls.route is None)
    for router in (explain.router, units.router, queries.router, suspicious.router, quality.router, dicomweb.router,
                   served):
        app.include_router(router, dependencies=[Depends(read_access)], responses=AUTH_RESPONSES)
    for module in (health, metrics, pages):
        app.include_router(module.router)
    return app


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker process when there are several: settings from the environment, JSON logs."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)


def main() -> None:
    """Serve with uvicorn on the configured host and port (``python -m service``, ``deepminer-serve``)."""
    import uvicorn

    settings = settings_from_environment(Settings)
    configure_logging(settings.log_level)
    # log_config=None keeps uvicorn from replacing the JSON handlers; the
    # middleware writes one line per request, so uvicorn's access log is off.
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": None,
        "access_log": False,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        return
    if multiprocess_dir() is None:
        log.warning(
            "%d worker processes without PROMETHEUS_MULTIPROC_DIR: each /metrics scrape sees one process only",
            settings.workers,
            extra={"fields": {"event": "metrics_per_process"}},
        )
    # Worker processes start from an import string and build their own app.
    uvicorn.run("service.main:app_from_environment", factory=True, workers=settings.workers, **options)  # type: ignore[arg-type]
