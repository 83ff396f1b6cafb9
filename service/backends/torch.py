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
from service.backends.base import check_input
from service.errors import BackendUnavailableError


class TorchBackend:
    """``to_fcn(build_classifier(...))`` with ``weights.pt``, in eval mode, on CUDA when asked for or available."""

    name = "torch"

    def __init__(
        self, bundle: Bundle, *, device: Literal["auto", "cpu", "cuda"] = "auto", intra_op_threads: int = 0
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
        classifier = build_classifier(depth=int(model_meta["depth"]), num_classes=len(bundle.classes))
        state = torch.load(bundle.path(WEIGHTS_FILE), map_location="cpu", weights_only=True)
        try:
            classifier.load_state_dict(state)
        except RuntimeError as exc:
            raise BackendUnavailableError(
                f"{bundle.path(WEIGHTS_FILE)} does not fit a {model_meta['architecture']} with "
                f"{len(bundle.classes)} classes: {exc}"
            ) from exc
        self._fcn: FullyConvolutional | None = to_fcn(classifier).eval().to(self._device)
        self.provider: str = str(self._device)

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward one image; see :class:`service.backends.base.Backend`."""
        if self._fcn is None:
            raise RuntimeError("the torch backend is closed")
        with torch.inference_mode():
            logits, features = self._fcn(torch.from_numpy(check_input(x)).to(self._device))
        return logits[0].float().cpu().numpy(), features[0].float().cpu().numpy()

    def close(self) -> None:
        """Free the model (and its GPU memory)."""
        self._fcn = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
