"""The performance suite (benchmarks/perf.py) runs end to end at toy scale and its figures add up."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from perf import fcn_flops
from perf_plots import markdown_tables

pytest.importorskip("pytorch_grad_cam", reason="the peer phase needs the bench extra (grad-cam)")


def test_flop_count_matches_published_resnet_figures() -> None:
    # torchvision lists ResNet-50 at 4.09 GMAC on 224 x 224; the FCN adds only a 1x1 head on 7 x 7 cells.
    assert fcn_flops(50, (224, 224)) / 2 == pytest.approx(4.09e9, rel=0.01)
    # The figure the performance issue quotes: a ResNet-152 FCN on 1024 x 640 is about 300 GFLOP.
    assert fcn_flops(152, (1024, 640)) / 1e9 == pytest.approx(300.7, abs=0.1)


@pytest.mark.slow
def test_suite_runs_every_phase_at_toy_scale(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [
        sys.executable, str(REPO / "benchmarks" / "perf.py"), "--depth", "18", "--short-side", "128",
        "--image-size", "400", "300", "--repeats", "2", "--pairs", "2", "--per-level", "2", "--cold-starts", "1",
        "--memory-requests", "12", "--memory-short-side", "96", "--scaling", "96", "128",
        "--batch-sizes", "1", "2", "--cache", str(tmp_path / "cache"), "--out", str(out), "--plots",
        "--phases", "peak", "forward", "onnx-options", "decode", "precision", "peer", "service", "memory", "scaling",
        "batch",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "perf.json").read_text())

    assert report["peak"]["peak_gflops"] > 0
    forward = report["forward"]
    assert forward["input_shape"] == [1, 3, 171, 128]  # 400 x 300 scaled to a short side of 128
    assert forward["gflop"] == pytest.approx(fcn_flops(18, (171, 128)) / 1e9)
    for engine in ("onnxruntime", "torch", "torch channels_last"):
        timing = forward["engines"][engine]
        assert timing["n"] == 2 and timing["min_s"] <= timing["median_s"] <= timing["max_s"]
        assert timing["gflops"] == pytest.approx(forward["gflop"] / timing["median_s"])

    decode = report["decode"]
    assert len(decode["results"]) == 6 and all(r["n"] == 6 for r in decode["results"].values())  # 3 x --repeats
    precision = report["precision"]
    assert set(precision["results"]) == {"torch fp32", "torch bf16", "torch fp16", "onnx fp32"}
    onnx = precision["agreement"]["onnx fp32"]
    assert onnx["logit_error"] < 1e-4 and onnx["same_class"] and onnx["top_k_shared"] == 5  # same fp32 numbers
    bf16 = precision["agreement"]["torch bf16"]
    assert bf16["finite"] and bf16["logit_error"] < 0.05 and bf16["top_k_shared"] >= 3

    assert report["peer"]["ratio"] == pytest.approx(
        report["peer"]["gradcam"]["median_s"] / report["peer"]["ours"]["median_s"]
    )

    service = report["service"]
    sequential = service["sequential"]
    assert len(sequential["pairs"]) == 2
    assert sequential["overhead_ratio"] == pytest.approx(
        statistics.median(p["explain_s"] * 1000 / p["server_ms"]["inference"] for p in sequential["pairs"])
    )
    assert sequential["overhead_ratio"] > 1  # end to end includes the forward and more
    assert sequential["vs_in_process_forward"] == pytest.approx(
        sequential["explain"]["median_s"] / sequential["bare_forward"]["median_s"]
    )
    assert {"upload", "decode", "preprocess", "inference", "explain", "encode"} <= set(sequential["server_ms"])
    dicom = service["sequential_dicom"]
    assert service["dicom_bytes"] > 2 * 400 * 300 and dicom["overhead_ratio"] > 1
    sizes = service["response_bytes"]
    assert sizes["uint16 (default)"] < sizes["maps=json"] < sizes["overlays=png"]
    assert [level["clients"] for level in service["concurrency"]] == [1, 2, 4, 8]
    for level in service["concurrency"]:
        assert level["outcomes"] == {"200": level["requests"]}  # no errors at any level
        assert 0 < level["busy_share"] <= 1.0
        assert level["p50_s"] <= level["p95_s"] <= level["p99_s"]
    assert len(service["cold_start_s"]) == 2 and all(s > 0 for s in service["cold_start_s"])

    memory = report["memory"]
    assert memory["short_side"] == 96 and memory["outcomes"] == {"200": 12}
    assert [n for n, _ in memory["samples"]][-1] == 12
    assert memory["warm_min_mib"] <= memory["warm_max_mib"] <= memory["rss_peak_mib"]

    assert [row["short_side"] for row in report["scaling"]["rows"]] == [96, 128]
    assert set(report["onnx_options"]) >= {"default (the service's)", "intra_op_num_threads=1"}
    assert [row["batch"] for row in report["batch"]["rows"]] == [1, 2]
    assert report["batch"]["provider"] == "CPUExecutionProvider"
    for figure in ("forward", "explain", "concurrency", "memory", "scaling"):
        assert (out / f"{figure}.png").stat().st_size > 1000
    tables = markdown_tables(report)
    for heading in ("Bare forward", "Decode and resize", "Forward by precision", "Peer", "/explain, DICOM upload", "Concurrent clients", "Memory", "Batches"):
        assert f"### {heading}" in tables
