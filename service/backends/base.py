"""The contract every inference backend fulfils."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """Runs the bundle's FCN on one normalised image.

    ``name`` is the engine (``onnx``, ``torch``) and ``provider`` what actually
    executes it (``CPUExecutionProvider``, ``cuda``…), as reported by the engine.
    ``run`` must be safe to call from several threads at once.
    """

    name: str
    provider: str

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward ``x`` ``(1, 3, H, W)`` float32; return float32 ``(logits (C, h, w), features (K, h, w))``."""
        ...

    def close(self) -> None:
        """Release the engine's resources; the backend is unusable afterwards."""
        ...


def check_input(x: np.ndarray) -> np.ndarray:
    """``x`` as a contiguous float32 ``(1, 3, H, W)`` array, or ``ValueError`` saying what it got."""
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"backend input must be (1, 3, H, W), got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)
