"""Inference backends behind one protocol, chosen by name: :data:`BACKENDS` lists them, :func:`create_backend` builds one.

A new backend is one module here whose class takes ``(bundle, *, device, intra_op_threads, precision)``
(:class:`~service.backends.base.FcnBackend` does the shared part) and one line in :mod:`service.backends.names`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from deepminer.bundle import INT8_ONNX_FILE, Bundle, BundleError
from service.backends.base import Backend
from service.backends.names import BACKENDS
from service.errors import BackendUnavailableError

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["BACKENDS", "Backend", "check_int8_gates", "create_backend"]

log = logging.getLogger(__name__)


def create_backend(settings: Settings, bundle: Bundle, *, on_batch: Callable[[int], None] | None = None) -> Backend:
    """The backend ``settings.backend`` names, loaded from ``bundle`` on ``settings.device`` at ``settings.precision``.

    With ``settings.batch_max_size > 1`` it comes wrapped in a
    :class:`~service.batching.MicroBatcher`, which reports each batch's size to ``on_batch``.
    At ``precision=int8``, :func:`check_int8_gates` runs first.
    """
    if settings.precision == "int8":
        check_int8_gates(bundle, allow_failed=settings.int8_allow_failed_gates)
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


def check_int8_gates(bundle: Bundle, *, allow_failed: bool) -> None:
    """Refuse, with :class:`BundleError`, a bundle whose int8 graph failed its accuracy gates (``int8.gates``).

    With ``allow_failed`` the failed gates are logged as a warning instead. A bundle without an int8
    graph passes here; the backend that serves int8 refuses it.
    """
    if not bundle.has(INT8_ONNX_FILE):
        return
    failed = bundle.int8_failed_gates()
    if not failed:
        return
    what = f"bundle {bundle.id}: {INT8_ONNX_FILE} failed its accuracy gates against fp32: {'; '.join(failed)}"
    if not allow_failed:
        raise BundleError(
            f"{what}. Serve fp32 (DEEPMINER_PRECISION=fp32), re-run `python -m training quantize` with other "
            "candidates, or set DEEPMINER_INT8_ALLOW_FAILED_GATES=true to serve it anyway"
        )
    log.warning("%s; served anyway (DEEPMINER_INT8_ALLOW_FAILED_GATES=true)", what,
                extra={"fields": {"event": "int8_gates_failed", "failed": failed}})
