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

QUALITY_SEED = 4242
"""Phantom seed for the quality check: the demo trains on seed 0, so these cases are new to it."""
QUALITY_CASES = 24
ENFORCED_BARS = ("auc_malignant", "auc_benign", "normal_images_predicted_normal", "background_max_lesion_probability",
                 "lesion_ranked_units_named_by_lesion_concept")
"""The bars of training.quality.DEMO_BARS that the demo meets with room to spare (README, "How good are these
explanations?")."""
FLOORS = {"concept_named": 0.3, "pointing_game": 0.8, "lesion_images_predicted_correctly": 0.7}
"""Regression floors for the other figures, below the spread the recipe gives (a 2-core AMD EPYC, both threads,
unseen seeds 4242, 777 and 2026, training seeds 0 and 1: concept named 0.38-0.94, pointing game 0.91-1.00,
lesion images right 0.81-0.97, benign AUC 0.65-1.00, the lowest on seed 2026): a fall below them is a fault, not a
draw. With SGD over seven epochs, the same machine gave lesion images right 0.72 on all three sets and concept named
1.00; before the demo centred each patch's cells on it (cell_weights "overlap") and trained on lesion crops with the
lesion-pair loss, pointing 81% and 84%; chance for pointing is 2%. The bars themselves are tracked in issue 13."""


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


def test_demo_explanations_pass_the_quality_bars_on_unseen_phantoms(demo_bundle: Path, tmp_path: Path) -> None:
    """On phantom cases of a seed it never saw, the demo's explanations point at lesions and name them."""
    from training.phantoms import PhantomConfig, generate_phantoms
    from training.quality import bundle_quality

    bundle = load_bundle(demo_bundle)
    meta = bundle.meta
    assert meta["training"]["recipe"] == "demo"
    assert meta["image_score"]["rule"] == "worst_patch"  # the demo recipe's score_rule
    built = meta["metrics"]["explanation_quality"]
    assert built is not None and built["report"] == "quality/quality.json"
    assert bundle.has("quality/quality.json") and bundle.has("quality/quality.md")
    labels = json.loads((demo_bundle / "concept_labels.json").read_text())
    assert labels, "the demo must seed automatic labels for some ranked units"

    manifest = generate_phantoms(
        tmp_path / "unseen", config=PhantomConfig(n_cases=QUALITY_CASES, height=640, seed=QUALITY_SEED),
        progress=False,
    )
    report, _ = bundle_quality(demo_bundle, manifest, tmp_path / "quality", bars=True, progress=False)
    bars = report.figures["bars"]
    print("\n" + "\n".join(f"{name}: {b['value']:.3f} ({b['bar']})" for name, b in bars.items()))
    assert report.figures["lesion_images"] >= 20
    failed = {name: b for name, b in bars.items() if name in ENFORCED_BARS and not b["pass"]}
    assert not failed, f"the demo fell below its quality bars on unseen phantoms: {failed}"
    fallen = {name: bars[name]["value"] for name, floor in FLOORS.items() if not bars[name]["value"] >= floor}
    assert not fallen, f"the demo's explanation quality regressed below {FLOORS}: {fallen}"


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
