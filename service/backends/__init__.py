"""Inference backends behind one protocol, chosen by name: :data:`BACKENDS` lists them, :func:`create_backend` builds one.

A new backend is one module here whose class takes ``(bundle, *, device, intra_op_threads, precision)``
(:class:`~service.backends.base.FcnBackend` does the shared part) and one line in :mod:`service.backends.names`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from deepminer.bundle import Bundle
from service.backends.base import Backend
from service.backends.names import BACKENDS
from service.errors import BackendUnavailableError

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["BACKENDS", "Backend", "create_backend"]


def create_backend(settings: Settings, bundle: Bundle, *, on_batch: Callable[[int], None] | None = None) -> Backend:
    """The backend ``settings.backend`` names, loaded from ``bundle`` on ``settings.device`` at ``settings.precision``.

    With ``settings.batch_max_size > 1`` it comes wrapped in a
    :class:`~service.batching.MicroBatcher`, which reports each batch's size to ``on_batch``.
    """
    try:
        cls = BACKENDS.get(settings.backend)
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            f"backend {settings.backend!r} needs the {exc.name!r} package, which is not installed; "
            "install the matching extra (pip install 'deepminer-service[torch]') or set DEEPMINER_BACKEND=onnx"
        ) from exc
    backend: Backend = cls(
        bundle, device=settings.device, intra_op_threads=settings.intra_op_threads, precision=settings.precision
    )
    if settings.batch_max_size > 1:
        from service.batching import MicroBatcher

        return MicroBatcher(
            backend,
            max_size=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            on_batch=on_batch,
        )
    return backend
