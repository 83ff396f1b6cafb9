"""PyTorch backend: the bundle's weights in the FCN built by :mod:`deepminer.fcn`.

The only module of the service that imports torch, so the default ONNX
deployment does not need it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from deepminer.bundle import WEIGHTS_FILE, Bundle
from deepminer.fcn import FullyConvolutional, build_classifier, select_device, to_fcn
from service.backends.base import FcnBackend, check_aux
from service.errors import BackendUnavailableError

MemoryFormat = Literal["channels_last", "contiguous"]


class TorchBackend(FcnBackend):
    """``to_fcn(build_classifier(...))`` with ``weights.pt``, in eval mode, on CUDA when asked for or available.

    ``memory_format``: ``channels_last`` (NHWC, the default) lets oneDNN and cuDNN run the
    convolutions without reordering every activation; ``contiguous`` (NCHW) is torch's default layout.
    BENCHMARKS.md has both timed.
    """

    name = "torch"

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        intra_op_threads: int = 0,
        memory_format: MemoryFormat = "channels_last",
    ) -> None:
        try:
            self._device = select_device(device)
        except RuntimeError as exc:
            raise BackendUnavailableError(f"{exc}; set DEEPMINER_DEVICE=cpu or auto") from exc
        if intra_op_threads > 0:
            # Process-wide in torch; the torch backend is one per process anyway.
            torch.set_num_threads(intra_op_threads)
        if self._device.type == "cuda":
            # cuDNN convolutions default to TF32 on recent GPUs (10-bit mantissa),
            # which breaks agreement with ONNX Runtime; full fp32 keeps the numbers the same.
            torch.backends.cudnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]
        model_meta = bundle.meta["model"]
        classifier = build_classifier(
            depth=int(model_meta["depth"]), num_classes=len(bundle.classes), aux_features=bundle.aux_features
        )
        state = torch.load(bundle.path(WEIGHTS_FILE), map_location="cpu", weights_only=True)
        try:
            classifier.load_state_dict(state)
        except RuntimeError as exc:
            raise BackendUnavailableError(
                f"{bundle.path(WEIGHTS_FILE)} does not fit a {model_meta['architecture']} with "
                f"{len(bundle.classes)} classes: {exc}"
            ) from exc
        self._layout = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        self._fcn: FullyConvolutional | None = (
            to_fcn(classifier).eval().to(self._device, memory_format=self._layout)  # type: ignore[call-overload]
        )
        self._num_aux = len(bundle.aux_features)
        self.provider: str = str(self._device)

    def _forward(self, x: np.ndarray, aux: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self._fcn is None:
            raise RuntimeError("the torch backend is closed")
        aux = check_aux(aux, x, self._num_aux)
        with torch.inference_mode():
            aux_t = None if aux is None else torch.from_numpy(aux).to(self._device)
            image = torch.from_numpy(x).to(self._device).contiguous(memory_format=self._layout)
            logits, features = self._fcn(image, aux_t)
            # NCHW on the way out, as the Backend contract has it (one copy of the features in channels_last).
            logits, features = (t.float().contiguous().cpu() for t in (logits, features))
        return logits.numpy(), features.numpy()

    def close(self) -> None:
        """Free the model (and its GPU memory)."""
        self._fcn = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
