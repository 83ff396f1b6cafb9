"""ONNX export of the FCN, checked against torch before it goes into a bundle."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from deepminer.fcn import FullyConvolutional

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAMES = ("logits", "features")


def export_onnx(fcn: FullyConvolutional, path: Path, *, example_shape: tuple[int, int], opset: int = 18) -> None:
    """Write the FCN as ONNX: input ``image`` (N, 3, H, W), outputs ``logits`` (N, C, h, w) and ``features`` (N, K, h, w).

    Batch, height and width are dynamic. The exported graph is run once with
    ONNX Runtime on a random input and must match torch; a mismatch raises.
    """
    fcn = fcn.eval().cpu()
    x = torch.randn(1, 3, *example_shape)
    dims = {0: torch.export.Dim("batch", max=1024), 2: torch.export.Dim("height", min=32, max=16384),
            3: torch.export.Dim("width", min=32, max=16384)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            fcn,
            (x,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"x": dims},
            opset_version=opset,
            verbose=False,
        )
    program.save(str(path))
    check_onnx(fcn, path, shape=(example_shape[0] + 17, example_shape[1] + 45))


def check_onnx(fcn: FullyConvolutional, path: Path, *, shape: tuple[int, int], atol: float = 1e-3) -> float:
    """Max absolute difference between ONNX Runtime and torch on a random ``shape`` input (raises above ``atol`` × scale)."""
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((1, 3, *shape), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_logits, ort_features = session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
    with torch.inference_mode():
        logits, features = fcn(torch.from_numpy(x))
    worst = 0.0
    for name, a, b in (("logits", ort_logits, logits.numpy()), ("features", ort_features, features.numpy())):
        if a.shape != b.shape:
            raise RuntimeError(f"ONNX {name} shape {a.shape} differs from torch {b.shape}")
        diff = float(np.abs(a - b).max())
        scale = max(1.0, float(np.abs(b).max()))
        if diff > atol * scale:
            raise RuntimeError(f"ONNX {name} differ from torch by {diff:g} (scale {scale:g})")
        worst = max(worst, diff)
    log.info("ONNX export matches torch (max abs diff %.2e)", worst)
    return worst
