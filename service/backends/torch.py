"""PyTorch backend: the bundle's weights in the FCN built by :mod:`deepminer.fcn`.

The only module of the service that imports torch, so the default ONNX
deployment does not need it.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Literal

import numpy as np
import torch

from deepminer.bundle import Bundle
from deepminer.fcn import FullyConvolutional, load_fcn, select_device
from service.backends.base import FcnBackend, Precision, check_aux
from service.errors import BackendUnavailableError, PrecisionOverflowError

MemoryFormat = Literal["channels_last", "contiguous"]
AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend(FcnBackend):
    """The bundle's FCN (:func:`deepminer.fcn.load_fcn`), in eval mode, on CUDA when asked for or available.

    ``memory_format``: ``channels_last`` (NHWC, the default) lets oneDNN and cuDNN run the
    convolutions without reordering every activation; ``contiguous`` (NCHW) is torch's default layout.
    BENCHMARKS.md has both timed.

    ``precision``: ``fp16`` or ``bf16`` run the FCN under :func:`torch.autocast` (convolutions and the
    1×1 head in that type, the weights kept in float32); the outputs come back as float32 either way.
    A device that cannot autocast to that type stops construction with :class:`BackendUnavailableError`.
    """

    name = "torch"

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        intra_op_threads: int = 0,
        memory_format: MemoryFormat = "channels_last",
        precision: Precision = "fp32",
    ) -> None:
        if precision == "int8":
            raise BackendUnavailableError(
                "precision=int8 runs the bundle's quantized ONNX graph: set DEEPMINER_BACKEND=onnx, or a precision "
                "of fp32, fp16 or bf16 for the torch backend"
            )
        if precision != "fp32" and precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
        try:
            self._device = select_device(device)
        except RuntimeError as exc:
            raise BackendUnavailableError(f"{exc}; set DEEPMINER_DEVICE=cpu or auto") from exc
        self._autocast_dtype = AUTOCAST_DTYPES.get(precision)
        if self._autocast_dtype is not None:
            check_autocast(self._device, self._autocast_dtype, precision)
        self.precision: Precision = precision
        if intra_op_threads > 0:
            # Process-wide in torch; the torch backend is one per process anyway.
            torch.set_num_threads(intra_op_threads)
        if self._device.type == "cuda":
            # cuDNN convolutions default to TF32 on recent GPUs (10-bit mantissa),
            # which breaks agreement with ONNX Runtime; full fp32 keeps the numbers the same.
            torch.backends.cudnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]
        try:
            fcn = load_fcn(bundle)
        except ValueError as exc:
            raise BackendUnavailableError(str(exc)) from exc
        self._layout = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        self._fcn: FullyConvolutional | None = (
            fcn.to(self._device, memory_format=self._layout)  # type: ignore[call-overload]
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
            with self._autocast():
                logits, features = self._fcn(image, aux_t)
            if self._autocast_dtype is not None and not (logits.isfinite().all() and features.isfinite().all()):
                # fp16 tops out at 65504: large activations become inf, and their CAM and influence NaN.
                raise PrecisionOverflowError(
                    f"the forward pass in precision={self.precision} gave non-finite logits or features on this "
                    "image; set DEEPMINER_PRECISION=bf16 (float32's range) or fp32"
                )
            # float32 NCHW on the way out, as the Backend contract has it: NCHW on the device (one copy of
            # the features in channels_last), to the host in the precision computed (fp16/bf16 move half
            # the bytes of float32), then float32 (a no-op at fp32).
            logits, features = (t.contiguous().cpu().float() for t in (logits, features))
        return logits.numpy(), features.numpy()

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self._device.type, dtype=self._autocast_dtype)

    def close(self) -> None:
        """Free the model (and its GPU memory)."""
        self._fcn = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def check_autocast(device: torch.device, dtype: torch.dtype, precision: str) -> None:
    """Refuse, with :class:`BackendUnavailableError`, a ``precision`` that ``device`` cannot autocast to.

    A convolution is tried under autocast: a torch or device without support for the type either fails
    or warns and runs in float32, which would serve float32 under another name.
    """
    advice = "set DEEPMINER_PRECISION=fp32" + (" or fp16" if device.type == "cuda" and precision == "bf16" else "")
    if (
        device.type == "cuda"
        and dtype == torch.bfloat16
        and not torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        raise BackendUnavailableError(
            f"precision={precision} needs a GPU with native bfloat16 (Ampere or newer), "
            f"got {torch.cuda.get_device_name(device)}; {advice}"
        )
    probe = torch.ones(1, 1, 1, 1, device=device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unsupported case warns; the dtype check below says it better
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
                got = torch.nn.functional.conv2d(probe, probe).dtype
    except (RuntimeError, ValueError) as exc:
        raise BackendUnavailableError(
            f"precision={precision} fails on {device} with torch {torch.__version__}: {exc}; {advice}"
        ) from exc
    if got != dtype:
        raise BackendUnavailableError(
            f"precision={precision}: torch {torch.__version__} does not autocast convolutions on {device} "
            f"to {dtype} (they ran in {got}); {advice}"
        )
