"""Inference backends behind one protocol; :func:`create_backend` picks one from the settings."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from deepminer.bundle import Bundle
from service.backends.base import Backend
from service.errors import BackendUnavailableError
from service.settings import Settings

__all__ = ["Backend", "create_backend"]


def create_backend(settings: Settings, bundle: Bundle, *, on_batch: Callable[[int], None] | None = None) -> Backend:
    """The backend ``settings.backend`` names, loaded from ``bundle`` on ``settings.device`` at ``settings.precision``.

    With ``settings.batch_max_size > 1`` it comes wrapped in a
    :class:`~service.batching.MicroBatcher`, which reports each batch's size to ``on_batch``.
    """
    # Imported here, not at the top: the torch backend must not pull in torch
    # for deployments that only use ONNX Runtime.
    try:
        module = importlib.import_module(f"service.backends.{settings.backend}")
    except ModuleNotFoundError as exc:
        raise BackendUnavailableError(
            f"backend {settings.backend!r} needs the {exc.name!r} package, which is not installed; "
            "install the matching extra (pip install 'deepminer-service[torch]') or set DEEPMINER_BACKEND=onnx"
        ) from exc
    cls = module.OnnxBackend if settings.backend == "onnx" else module.TorchBackend
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
