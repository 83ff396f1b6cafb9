"""The contract every inference backend fulfils."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np

Precision = Literal["fp32", "fp16", "bf16", "int8"]
"""Arithmetic of the forward pass (``DEEPMINER_PRECISION``); every backend still returns float32."""


@runtime_checkable
class Backend(Protocol):
    """Runs the bundle's FCN on one normalised image, or on a batch of same-shape images.

    ``name`` is the engine (``onnx``, ``torch``) and ``provider`` what actually
    executes it (``CPUExecutionProvider``, ``cuda``…), as reported by the engine.
    ``run`` must be safe to call from several threads at once.

    ``aux``: for a bundle with auxiliary features, their raw values ``(N, J)``
    float32, one row per image (:func:`check_aux`); None otherwise.
    """

    name: str
    provider: str
    precision: str

    def run(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Forward ``x`` ``(1, 3, H, W)`` float32; return float32 ``(logits (C, h, w), features (K, h, w))``."""
        ...

    def run_batch(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Forward ``x`` ``(N, 3, H, W)`` float32; return float32 ``(logits (N, C, h, w), features (N, K, h, w))``."""
        ...

    def close(self) -> None:
        """Release the engine's resources; the backend is unusable afterwards."""
        ...


class FcnBackend:
    """What both engines share: ``run`` and ``run_batch`` check the input and call ``_forward`` on a batch.

    ``precision`` is the arithmetic the engine runs the FCN in, for logs and reports.
    """

    precision: Precision = "fp32"

    def run(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Forward one image; see :class:`Backend`."""
        logits, features = self._forward(check_input(x), aux)
        return logits[0], features[0]

    def run_batch(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Forward a batch of same-shape images; see :class:`Backend`."""
        return self._forward(check_input(x, batch=True), aux)

    def _forward(self, x: np.ndarray, aux: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The engine's forward pass on a checked ``(N, 3, H, W)`` batch."""
        raise NotImplementedError


def check_input(x: np.ndarray, *, batch: bool = False) -> np.ndarray:
    """``x`` as a contiguous float32 ``(1, 3, H, W)`` array (``(N, 3, H, W)`` with ``batch``), or ``ValueError``."""
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] < 1 or (not batch and x.shape[0] != 1):
        expected = "(N, 3, H, W)" if batch else "(1, 3, H, W)"
        raise ValueError(f"backend input must be {expected}, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_aux(aux: np.ndarray | None, x: np.ndarray, num_features: int) -> np.ndarray | None:
    """``aux`` as contiguous float32 ``(N, J)`` for the ``N`` images of ``x``, or ``ValueError``.

    None is right only for a model without auxiliary features (``num_features == 0``), and required for one.
    """
    if num_features == 0:
        if aux is not None:
            raise ValueError(f"this model takes no auxiliary features, got aux of shape {aux.shape}")
        return None
    if aux is None or aux.shape != (x.shape[0], num_features):
        got = None if aux is None else aux.shape
        raise ValueError(f"this model needs aux of shape ({x.shape[0]}, {num_features}), got {got}")
    return np.ascontiguousarray(aux, dtype=np.float32)
