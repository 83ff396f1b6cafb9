"""The ONNX Runtime and torch backends give the same numbers; device choices fail loudly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from deepminer.bundle import load_bundle
from deepminer.imaging import decode_image, network_input
from service.backends import create_backend
from service.backends.onnx import OnnxBackend
from service.errors import BackendUnavailableError
from service.settings import Settings

torch = pytest.importorskip("torch")

HAS_ORT_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
HAS_TORCH_CUDA = torch.cuda.is_available()


def phantom_input(tiny_bundle: Path, png: bytes, *, extra_columns: int = 0) -> np.ndarray:
    bundle = load_bundle(tiny_bundle)
    pixels = decode_image(png).pixels
    if extra_columns:  # an odd width exercises the grid's ceil(n / 32)
        pixels = np.pad(pixels, ((0, 0), (0, extra_columns)))
    return network_input(pixels, short_side=bundle.input_short_side, mean=bundle.mean, std=bundle.std)


def assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    for name, x, y in zip(("logits", "features"), a, b):
        assert x.shape == y.shape, name
        scale = max(1.0, float(np.abs(y).max()))
        assert float(np.abs(x - y).max()) < 1e-3 * scale, name


@pytest.mark.parametrize("extra_columns", [0, 45])
def test_onnx_and_torch_agree(tiny_bundle: Path, phantom_png: bytes, extra_columns: int) -> None:
    bundle = load_bundle(tiny_bundle)
    x = phantom_input(tiny_bundle, phantom_png, extra_columns=extra_columns)
    onnx = create_backend(Settings(bundle=tiny_bundle, backend="onnx", device="cpu"), bundle)
    torch_backend = create_backend(Settings(bundle=tiny_bundle, backend="torch", device="cpu"), bundle)
    assert (onnx.name, onnx.provider) == ("onnx", "CPUExecutionProvider")
    assert (torch_backend.name, torch_backend.provider) == ("torch", "cpu")
    logits, features = onnx.run(x)
    assert logits.dtype == features.dtype == np.float32
    assert logits.shape[0] == len(bundle.classes) and features.shape[0] == bundle.num_units
    assert_same(torch_backend.run(x), (logits, features))


def test_torch_layouts_agree_and_return_nchw(tiny_bundle: Path, phantom_png: bytes) -> None:
    from service.backends.torch import TorchBackend

    bundle = load_bundle(tiny_bundle)
    x = phantom_input(tiny_bundle, phantom_png, extra_columns=45)
    channels_last = TorchBackend(bundle, device="cpu", memory_format="channels_last").run(x)
    contiguous = TorchBackend(bundle, device="cpu", memory_format="contiguous").run(x)
    assert_same(channels_last, contiguous)
    for array in channels_last:
        assert array.flags.c_contiguous  # (C, h, w) row-major, whatever layout the convolutions used


def test_apps_on_either_backend_explain_alike(make_client: Callable[..., Any], phantom_png: bytes) -> None:
    files = {"file": ("m.png", phantom_png, "image/png")}
    bodies = {}
    for backend in ("onnx", "torch"):
        with make_client(backend=backend, device="cpu") as client:
            bodies[backend] = client.post("/explain", files=files, params={"top_k": 8, "maps": "json"}).json()
            assert bodies[backend]["model"]["backend"] == backend
    onnx, torch_body = bodies["onnx"], bodies["torch"]
    assert onnx["predicted_class"] == torch_body["predicted_class"]
    for c in onnx["classes"]:
        assert onnx["scores"][c] == pytest.approx(torch_body["scores"][c], abs=1e-4)
        assert onnx["classifier_probabilities"][c] == pytest.approx(torch_body["classifier_probabilities"][c], abs=1e-4)
    np.testing.assert_allclose(onnx["cam"]["values"], torch_body["cam"]["values"], atol=1e-3, rtol=1e-3)
    assert [u["unit_id"] for u in onnx["units"]][:3] == [u["unit_id"] for u in torch_body["units"]][:3]


@pytest.mark.skipif(HAS_ORT_CUDA, reason="this onnxruntime has CUDA; the missing-CUDA error cannot happen")
def test_onnx_cuda_without_cuda_stops_start_up(tiny_bundle: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        OnnxBackend(load_bundle(tiny_bundle), device="cuda")


@pytest.mark.skipif(HAS_TORCH_CUDA, reason="torch sees a GPU; the missing-CUDA error cannot happen")
def test_torch_cuda_without_cuda_stops_start_up(tiny_bundle: Path) -> None:
    settings = Settings(bundle=tiny_bundle, backend="torch", device="cuda")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        create_backend(settings, load_bundle(tiny_bundle))


@pytest.mark.skipif(not HAS_TORCH_CUDA, reason="needs a CUDA GPU visible to torch")
def test_torch_on_cuda_agrees_with_onnx_on_cpu(tiny_bundle: Path, phantom_png: bytes) -> None:
    bundle = load_bundle(tiny_bundle)
    x = phantom_input(tiny_bundle, phantom_png)
    gpu = create_backend(Settings(bundle=tiny_bundle, backend="torch", device="cuda"), bundle)
    assert gpu.provider.startswith("cuda")
    # cuDNN may pick TF32 or other algorithms; same tolerance relative to scale as on CPU.
    assert_same(gpu.run(x), OnnxBackend(bundle, device="cpu").run(x))


@pytest.mark.skipif(not HAS_ORT_CUDA, reason="needs onnxruntime with the CUDA execution provider and a GPU")
def test_onnx_auto_uses_cuda_when_present(tiny_bundle: Path) -> None:
    backend = OnnxBackend(load_bundle(tiny_bundle), device="auto")
    assert backend.provider == "CUDAExecutionProvider"
