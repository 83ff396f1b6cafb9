"""ONNX Runtime backend: the default, needs no torch."""

from __future__ import annotations

from typing import Literal

import numpy as np
import onnxruntime as ort

from deepminer.bundle import INT8_ONNX_FILE, ONNX_FILE, Bundle
from service.backends.base import FcnBackend, Precision, check_aux
from service.errors import BackendUnavailableError

INPUT_NAME = "image"
AUX_INPUT_NAME = "aux"  # raw auxiliary features (N, J), only in bundles that have them
OUTPUT_NAMES = ("logits", "features")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class OnnxBackend(FcnBackend):
    """The bundle's ``fcn.onnx`` in an ONNX Runtime session (CUDA when asked for or available, else CPU).

    ``precision``: ``fp32``, the bundle's graph as exported, or ``int8``, its quantized graph
    ``fcn.int8.onnx`` (QDQ: float32 in and out, integer convolutions inside); a bundle without that file
    stops construction with :class:`BackendUnavailableError`, as do ``fp16`` and ``bf16``, which are the
    torch backend's. Whether the int8 graph's accuracy gates held is :func:`service.backends.create_backend`'s
    to check, since the settings decide what to do when they failed.

    ``io_binding``: run through an :class:`onnxruntime.IOBinding` (outputs allocated on the session's
    device, copied to the host after the run) rather than ``session.run``; None (the default) uses it
    on CUDA. The numbers are the same either way.
    """

    name = "onnx"

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        intra_op_threads: int = 0,
        precision: Precision = "fp32",
        io_binding: bool | None = None,
    ) -> None:
        if precision not in ("fp32", "int8"):
            raise BackendUnavailableError(
                f"precision={precision} needs the torch backend: ONNX Runtime runs the bundle's fp32 or int8 graph. "
                "Set DEEPMINER_BACKEND=torch (an image built with WITH_TORCH=true), or DEEPMINER_PRECISION=fp32"
            )
        if precision == "int8" and not bundle.has(INT8_ONNX_FILE):
            raise BackendUnavailableError(
                f"precision=int8 needs the bundle's int8 graph {INT8_ONNX_FILE}, which bundle {bundle.id} lacks; "
                f"add it with `python -m training quantize --bundle {bundle.root}`, or set DEEPMINER_PRECISION=fp32"
            )
        self.precision: Precision = precision
        graph = bundle.path(INT8_ONNX_FILE if precision == "int8" else ONNX_FILE)
        available = ort.get_available_providers()
        if device == "cuda" and CUDA not in available:
            raise BackendUnavailableError(
                f"device=cuda was requested but this onnxruntime offers only {available}; "
                "install onnxruntime-gpu with a matching CUDA, or set DEEPMINER_DEVICE=cpu or auto"
            )
        providers = [CUDA, CPU] if device != "cpu" and CUDA in available else [CPU]
        options = ort.SessionOptions()
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        try:
            session = ort.InferenceSession(str(graph), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types, not importable portably
            raise BackendUnavailableError(f"ONNX Runtime cannot load {graph}: {exc}") from exc
        # CUDA may be listed yet fail to initialise (driver, libraries); ORT then
        # silently falls back to CPU, so report the provider it really uses.
        self.provider: str = session.get_providers()[0]
        if device == "cuda" and self.provider != CUDA:
            raise BackendUnavailableError(
                f"device=cuda was requested but ONNX Runtime fell back to {self.provider}; check the CUDA "
                "installation (its log says why), or set DEEPMINER_DEVICE=cpu or auto"
            )
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if INPUT_NAME not in inputs or not set(OUTPUT_NAMES) <= set(outputs):
            raise BackendUnavailableError(
                f"{graph} must take input {INPUT_NAME!r} and give outputs {list(OUTPUT_NAMES)}, "
                f"got inputs {inputs} and outputs {outputs}; re-export the bundle"
            )
        self._num_aux = len(bundle.aux_features)
        if (AUX_INPUT_NAME in inputs) != (self._num_aux > 0):
            raise BackendUnavailableError(
                f"{graph} has inputs {inputs}, but meta.json declares {self._num_aux} auxiliary "
                f"features; an input {AUX_INPUT_NAME!r} must exist exactly when there are some. Re-export the bundle"
            )
        self.io_binding: bool = self.provider == CUDA if io_binding is None else io_binding
        self._output_device = "cuda" if self.provider == CUDA else "cpu"
        self._session: ort.InferenceSession | None = session

    def _forward(self, x: np.ndarray, aux: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self._session is None:
            raise RuntimeError("the ONNX backend is closed")
        feeds = {INPUT_NAME: x}
        aux = check_aux(aux, x, self._num_aux)
        if aux is not None:
            feeds[AUX_INPUT_NAME] = aux
        if self.io_binding:
            logits, features = self._run_bound(self._session, feeds)
        else:
            logits, features = self._session.run(list(OUTPUT_NAMES), feeds)
        return np.asarray(logits, dtype=np.float32), np.asarray(features, dtype=np.float32)

    def _run_bound(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """``session.run`` through a fresh IOBinding (one per call: a binding is not safe to share between threads).

        The inputs are copied from host memory to the session's device, the outputs are allocated
        there and copied to the host after the run; on CPU (``io_binding=True``) nothing is copied in.
        """
        binding = session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in OUTPUT_NAMES:
            binding.bind_output(name, self._output_device)
        session.run_with_iobinding(binding)
        outputs: list[np.ndarray] = binding.copy_outputs_to_cpu()
        return outputs

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees it with the last reference)."""
        self._session = None
