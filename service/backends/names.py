"""The inference backends by name: the one list settings, responses and the Helm chart agree with.

Each backend module is imported on first use (:class:`service.registry.Registry`), so this
module, and the settings that validate ``DEEPMINER_BACKEND`` against it, import no engine.
"""

from __future__ import annotations

from typing import Protocol

from deepminer.bundle import Bundle
from service.backends.base import Backend
from service.registry import Registry


class BackendClass(Protocol):
    """What a registered backend is: a class built from a bundle and the engine settings."""

    def __call__(self, bundle: Bundle, *, device: str, intra_op_threads: int, precision: str) -> Backend: ...


BACKENDS: Registry[BackendClass] = Registry("backend")
BACKENDS.register("onnx", "service.backends.onnx:OnnxBackend")  # the default: ONNX Runtime, no torch needed
BACKENDS.register("torch", "service.backends.torch:TorchBackend")
