"""DEEPMINER_PRECISION=int8: a tiny bundle quantized by ``python -m training quantize``, served and reported,
and the start-up refusals (no int8 graph, failed accuracy gates without the override, the torch backend)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepminer.bundle import INT8_ONNX_FILE, META_FILE, BundleError, finalise_bundle, load_bundle
from service.backends import create_backend
from service.backends.onnx import OnnxBackend
from service.errors import BackendUnavailableError
from service.settings import Settings
from training.quantize.command import Candidate, quantize_bundle
from training.quantize.gates import GATE_BOUNDS, check, pearson


@pytest.fixture(scope="module")
def int8_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle with its int8 graph: MinMax calibration, layer4 and the head in float."""
    out = tmp_path_factory.mktemp("int8") / "tiny-int8"
    shutil.copytree(tiny_bundle, out)
    quantize_bundle(out, candidates=[Candidate("minmax", "layer4")], repeats=1, progress=False)
    return out


def _with_gates(source: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of ``source`` whose meta.json ``int8.gates`` went through ``edit``, re-finalised."""
    shutil.copytree(source, target)
    meta = json.loads((target / META_FILE).read_text())
    edit(meta["int8"]["gates"])
    meta.pop("files")
    finalise_bundle(target, meta)
    return target


def _gates(cam_pearson: float) -> Callable[[dict[str, Any]], None]:
    """Hand-made gates: every other gate held; the CAM's at ``cam_pearson``."""

    def edit(gates: dict[str, Any]) -> None:
        gates["checks"] = {name: check(value, *GATE_BOUNDS[name]) for name, value in (
            ("auc_delta", 0.0), ("top5_units_shared", 5.0), ("cam_pearson", cam_pearson),
            ("pointing_game_delta_points", 0.0))}
        gates["pass"] = all(c["pass"] for c in gates["checks"].values())

    return edit


def test_settings_read_int8_and_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().int8_allow_failed_gates is False
    monkeypatch.setenv("DEEPMINER_PRECISION", "int8")
    monkeypatch.setenv("DEEPMINER_INT8_ALLOW_FAILED_GATES", "true")
    settings = Settings()
    assert (settings.precision, settings.int8_allow_failed_gates) == ("int8", True)


def test_int8_is_served_and_reported(
    int8_bundle: Path, make_client: Callable[..., Any], phantom_png: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = load_bundle(int8_bundle)
    assert bundle.int8 is not None
    held = bundle.int8["gates"]["pass"]
    files = {"file": ("m.png", phantom_png, "image/png")}
    params = {"top_k": 5, "maps": "json"}
    with make_client(bundle=int8_bundle, backend="onnx", device="cpu") as client:
        fp32 = client.post("/explain", files=files, params=params).json()
    with caplog.at_level(logging.WARNING), make_client(bundle=int8_bundle, backend="onnx", device="cpu",
                                                       precision="int8", int8_allow_failed_gates=not held) as client:
        ready = client.get("/readyz")
        response = client.post("/explain", files=files, params=params)
        metrics = client.get("/metrics").text
    assert ("served anyway" in caplog.text) == (not held)  # the override only ever hides a failure it logs
    assert ready.status_code == 200 and ready.json()["model"]["precision"] == "int8"
    assert response.status_code == 200, response.text
    int8 = response.json()
    assert (fp32["model"]["precision"], int8["model"]["precision"]) == ("fp32", "int8")
    assert int8["model"]["id"] == fp32["model"]["id"] == bundle.id
    assert 'precision="int8"' in next(line for line in metrics.splitlines() if line.startswith("deepminer_model_info"))
    cam, cam32 = np.asarray(int8["cam"]["values"]), np.asarray(fp32["cam"]["values"])
    assert np.isfinite(cam).all() and cam.shape == cam32.shape
    assert not np.array_equal(cam, cam32)  # another graph ran ...
    assert pearson(cam, cam32) > 0.9  # ... computing nearly the same map (layer4 stays in float)


def test_int8_backend_runs_the_int8_graph(int8_bundle: Path, phantom_png: bytes) -> None:
    from deepminer.imaging import decode_image, network_input

    bundle = load_bundle(int8_bundle)
    x = network_input(decode_image(phantom_png).pixels, short_side=bundle.input_short_side, mean=bundle.mean,
                      std=bundle.std)
    int8 = OnnxBackend(bundle, device="cpu", precision="int8")
    logits, features = int8.run(x)
    logits32, features32 = OnnxBackend(bundle, device="cpu").run(x)
    assert int8.precision == "int8" and logits.dtype == features.dtype == np.float32
    assert logits.shape == logits32.shape and features.shape == features32.shape
    batch = int8.run_batch(np.concatenate([x, x]))
    np.testing.assert_array_equal(batch[0][1], logits)


def test_start_up_refuses_int8_without_the_int8_graph(make_client: Callable[..., Any]) -> None:
    with pytest.raises(BackendUnavailableError, match=rf"precision=int8 needs the bundle's int8 graph "
                       rf"{INT8_ONNX_FILE}, which bundle .* lacks; add it with `python -m training quantize --bundle"):
        with make_client(backend="onnx", device="cpu", precision="int8"):
            pass


def test_start_up_refuses_failed_gates_unless_told_otherwise(
    int8_bundle: Path, tmp_path: Path, make_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    held = _with_gates(int8_bundle, tmp_path / "held", _gates(cam_pearson=0.995))
    assert load_bundle(held).int8_failed_gates() == []
    with make_client(bundle=held, backend="onnx", device="cpu", precision="int8") as client:
        assert client.get("/readyz").json()["model"]["precision"] == "int8"
    failed = _with_gates(int8_bundle, tmp_path / "failed", _gates(cam_pearson=0.9))
    assert load_bundle(failed).int8_failed_gates() == ["cam_pearson: 0.9 (>= 0.99)"]
    with pytest.raises(BundleError, match=r"failed its accuracy gates against fp32: cam_pearson: 0\.9 \(>= 0\.99\)\. "
                       r".*DEEPMINER_INT8_ALLOW_FAILED_GATES=true"):
        with make_client(bundle=failed, backend="onnx", device="cpu", precision="int8"):
            pass
    with caplog.at_level(logging.WARNING), make_client(bundle=failed, backend="onnx", device="cpu",
                                                       precision="int8", int8_allow_failed_gates=True) as client:
        assert client.get("/readyz").json()["model"]["precision"] == "int8"
    assert "served anyway" in caplog.text
    # fp32 from the same bundle never looks at the int8 gates.
    with make_client(bundle=failed, backend="onnx", device="cpu") as client:
        assert client.get("/readyz").json()["model"]["precision"] == "fp32"


def test_torch_backend_refuses_int8(int8_bundle: Path) -> None:
    pytest.importorskip("torch")
    settings = Settings(bundle=int8_bundle, backend="torch", device="cpu", precision="int8",
                        int8_allow_failed_gates=True)
    with pytest.raises(BackendUnavailableError, match="precision=int8 runs the bundle's quantized ONNX graph: set "
                       "DEEPMINER_BACKEND=onnx"):
        create_backend(settings, load_bundle(int8_bundle))
