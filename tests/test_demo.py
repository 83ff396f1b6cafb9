"""End to end, as a newcomer runs it: build the demo bundle, serve it over loopback, explain a phantom.

Slow (minutes): skip locally with ``-m "not slow"``; CI runs it.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deepminer.bundle import load_bundle
from training.manifest import read_manifest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "training", "-q", "demo", "--out", str(root / "bundle"), "--data", str(root / "data")],
        check=True,
        timeout=40 * 60,
    )
    print(f"\ndemo bundle built in {time.perf_counter() - started:.0f} s")
    return root / "bundle"


def test_demo_bundle_metrics_and_cam_localisation(demo_bundle: Path, tmp_path: Path) -> None:
    """The demo model separates the classes, and its CAM points at lesions on unseen phantoms."""
    import torch

    from deepminer.fcn import build_classifier, to_fcn
    from training.localisation import cam_peak_in_lesion
    from training.phantoms import PhantomConfig, generate_phantoms
    from training.ranking import fcn_maps

    bundle = load_bundle(demo_bundle)
    meta = bundle.meta
    auc = meta["metrics"]["test_patches"]["auc"]
    print(f"\ndemo test AUC {auc}; pAUC {meta['metrics']['test_patches']['pauc']}")
    assert all(v is not None and v > 0.5 for v in auc.values())
    labels = json.loads((demo_bundle / "concept_labels.json").read_text())
    assert labels, "the demo must seed automatic labels for some ranked units"

    # Fresh phantom cases (another seed): test images the model has never seen.
    manifest = generate_phantoms(
        tmp_path / "unseen", config=PhantomConfig(n_cases=12, height=640, seed=101), workers=1, progress=False
    )
    model = build_classifier(depth=meta["model"]["depth"], num_classes=len(bundle.classes))
    model.load_state_dict(torch.load(bundle.path("weights.pt"), weights_only=True))
    maps = fcn_maps(
        to_fcn(model).eval(), [r for r in read_manifest(manifest) if r.lesions],
        short_side=bundle.input_short_side, mean=bundle.mean, std=bundle.std, device=torch.device("cpu"),
        progress=False,
    )
    loc = cam_peak_in_lesion(maps, bundle.head[0], bundle.classes)
    print(
        f"CAM peak on a lesion in {loc['images']} unseen phantom mammograms: "
        f"{loc['peak_in_lesion_rate']:.1%} (chance {loc['chance_rate']:.1%})"
    )
    assert loc["images"] >= 10
    assert loc["peak_in_lesion_rate"] > loc["chance_rate"]


def test_served_demo_explains_a_phantom(demo_bundle: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "DEEPMINER_BUNDLE": str(demo_bundle),
        "DEEPMINER_DATABASE_URL": f"sqlite:///{tmp_path / 'labels.db'}",
        "DEEPMINER_PORT": str(port),
    }
    server = subprocess.Popen([sys.executable, "-m", "service"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "the service exited during start-up"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready in 120 s"
            time.sleep(0.5)
        manifest = demo_bundle.parent / "data" / "manifest.csv"
        record = next(r for r in read_manifest(manifest) if r.pathology == "malignant")
        payload = record.image_path.read_bytes()
        latencies = []
        for _ in range(5):
            t0 = time.perf_counter()
            response = httpx.post(f"{base}/explain", files={"file": ("p.png", payload, "image/png")}, timeout=60)
            latencies.append(time.perf_counter() - t0)
            assert response.status_code == 200, response.text
        body = response.json()
        print(f"\n/explain latency over loopback, median of 5: {1000 * statistics.median(latencies):.0f} ms")
        assert body["classes"] == ["normal", "benign", "malignant"]
        assert len(body["units"]) == 5
        assert body["cam"]["shape"] == list(body["probability_maps"]["malignant"]["shape"])
        units = httpx.get(f"{base}/units", timeout=10).json()
        annotated = [u for u in units["units"] if u["annotations"]]
        assert annotated and annotated[0]["annotations"][0]["source"] == "automatic"
    finally:
        server.terminate()
        server.wait(timeout=30)
