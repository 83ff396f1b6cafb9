"""What every process that explains loads once: the backend, the unit-label store, the catalogue and the explainer.

The HTTP service (:mod:`service.main`) and the DICOM listener (:mod:`service.dimse`)
both build their :class:`~service.explainer.Explainer` here, so they explain
with the same objects configured by the same settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from annotations import AnnotationStore
from deepminer.bundle import Bundle
from service.backends import create_backend
from service.backends.base import Backend
from service.explainer import Explainer
from service.settings import Settings
from service.units import UnitCatalog, seed_automatic_labels

log = logging.getLogger(__name__)


def software_version() -> str:
    """The installed package's version, which the app and the DICOM results' equipment report."""
    try:
        return version("deepminer-service")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True)
class Loaded:
    """The loaded parts of one process, and how long the explainer's warm-up took."""

    backend: Backend
    store: AnnotationStore
    catalog: UnitCatalog
    explainer: Explainer
    warm_up_ms: float


def load_explainer(
    settings: Settings, bundle: Bundle, cleanup: ExitStack, *, on_batch: Callable[[int], None] | None = None
) -> Loaded:
    """Create backend and store for the verified ``bundle``, seed labels, build and warm up the explainer.

    Blocking (model loading, database). What needs closing is registered on ``cleanup``, so a
    later failure undoes it; the caller pops it once it owns the parts.
    """
    backend = create_backend(settings, bundle, on_batch=on_batch)
    cleanup.callback(backend.close)
    store = AnnotationStore(settings.database_url)
    cleanup.callback(store.close)
    store.init_schema()
    catalog = UnitCatalog(bundle=bundle, store=store)
    if settings.seed_automatic_labels:
        added = seed_automatic_labels(bundle, store)
        log.info("automatic labels seeded", extra={"fields": {"event": "labels_seeded", "added": added}})
    explainer = Explainer(
        bundle=bundle,
        backend=backend,
        catalog=catalog,
        max_image_pixels=settings.max_image_pixels,
        max_top_k=settings.max_top_k,
        explain_automatic_labels=settings.explain_automatic_labels,
        default_top_k=settings.top_k,
    )
    warm_up_ms = explainer.warm_up()
    return Loaded(backend=backend, store=store, catalog=catalog, explainer=explainer, warm_up_ms=warm_up_ms)
