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
AUX_INPUT_NAME = "aux"
OUTPUT_NAMES = ("logits", "features")


def export_onnx(fcn: FullyConvolutional, path: Path, *, example_shape: tuple[int, int], opset: int = 18) -> None:
    """Write the FCN as ONNX: input ``image`` (N, 3, H, W), outputs ``logits`` (N, C, h, w) and ``features`` (N, K, h, w).

    An FCN with auxiliary features takes a second input ``aux`` (N, J) float32:
    the raw values, in the order of the bundle's ``model.aux_features``; the
    normalisation is part of the graph, so integrators never apply it.
    Batch, height and width are dynamic. The exported graph is run once with
    ONNX Runtime on a random input and must match torch; a mismatch raises.
    """
    fcn = fcn.eval().cpu()
    x = torch.randn(1, 3, *example_shape)
    batch = torch.export.Dim("batch", max=1024)
    dims = {0: batch, 2: torch.export.Dim("height", min=32, max=16384),
            3: torch.export.Dim("width", min=32, max=16384)}
    args: tuple[torch.Tensor, ...] = (x,)
    input_names = [INPUT_NAME]
    dynamic_shapes: dict[str, dict[int, torch.export.Dim]] = {"x": dims}
    if fcn.aux is not None:
        args = (x, _example_aux(fcn, 1))
        input_names.append(AUX_INPUT_NAME)
        dynamic_shapes["aux"] = {0: batch}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            fcn,
            args,
            dynamo=True,
            input_names=input_names,
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            verbose=False,
        )
    program.save(str(path))
    check_onnx(fcn, path, shape=(example_shape[0] + 17, example_shape[1] + 45))


def _example_aux(fcn: FullyConvolutional, n: int, seed: int = 0) -> torch.Tensor:
    """Raw auxiliary values around the training statistics, ``mean + std · N(0, 1)``, shape ``(n, J)``."""
    assert fcn.aux is not None
    mean, std = fcn.aux.mean.cpu().numpy(), fcn.aux.std.cpu().numpy()
    z = np.random.default_rng(seed).standard_normal((n, mean.shape[0]))
    return torch.from_numpy((mean + std * z).astype(np.float32))


def check_onnx(fcn: FullyConvolutional, path: Path, *, shape: tuple[int, int], atol: float = 1e-3) -> float:
    """Max absolute difference between ONNX Runtime and torch on a random ``shape`` input (raises above ``atol`` × scale).

    With auxiliary features, random raw values go in as ``aux`` too, for a batch of 2 images.
    """
    import onnxruntime as ort

    n = 1 if fcn.aux is None else 2
    x = np.random.default_rng(0).standard_normal((n, 3, *shape), dtype=np.float32)
    feeds = {INPUT_NAME: x}
    aux = None
    if fcn.aux is not None:
        aux = _example_aux(fcn, n, seed=1)
        feeds[AUX_INPUT_NAME] = aux.numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_logits, ort_features = session.run(list(OUTPUT_NAMES), feeds)
    with torch.inference_mode():
        logits, features = fcn(torch.from_numpy(x), aux)
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
