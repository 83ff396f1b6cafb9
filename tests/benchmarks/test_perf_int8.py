"""The performance suite's int8 phase at toy scale: a random ResNet-18 quantized on the spot and a trained bundle."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from deepminer.bundle import load_bundle
from training.quantize.command import Candidate, quantize_bundle
from training.quantize.gates import GATE_BOUNDS

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

from perf_plots import markdown_tables  # noqa: E402


@pytest.mark.slow
def test_int8_phase_times_int8_against_fp32_and_reports_the_gates(tiny_bundle: Path, tmp_path: Path) -> None:
    trained = tmp_path / "trained"
    shutil.copytree(tiny_bundle, trained)
    quantize_bundle(trained, candidates=[Candidate("percentile", "last-block")], repeats=1, progress=False)
    out = tmp_path / "out"
    command = [
        sys.executable, str(REPO / "benchmarks" / "perf.py"), "--depth", "18", "--short-side", "128",
        "--image-size", "400", "300", "--repeats", "2", "--cache", str(tmp_path / "cache"), "--out", str(out),
        "--phases", "int8", "--int8-candidates", "minmax:layer4", "--int8-trained", str(trained),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "perf.json").read_text())["int8"]
    measured, on_trained = report["measured"], report["trained"]
    assert measured["architecture"] == "resnet18" and measured["input_shape"] == [1, 3, 171, 128]
    assert measured["quantization"]["calibration"]["method"] == "minmax"
    assert measured["quantization"]["float_region"] == "layer4"
    assert on_trained["bundle"] == load_bundle(trained).id  # a bundle with an int8 graph is measured as it is
    assert on_trained["quantization"]["float_region"] == "last-block"
    for phase in (measured, on_trained):
        fp32, int8 = phase["samples"]["fp32"], phase["samples"]["int8"]
        assert len(fp32) == len(int8) == 2
        assert phase["speedup"] == pytest.approx(statistics.median(fp32) / statistics.median(int8))
        assert set(phase["gates"]["checks"]) == set(GATE_BOUNDS)
        assert isinstance(phase["cpu"]["instruction_sets"], list) and phase["cpu"]["model"]
    assert "int8 against fp32" in done.stdout and "int8 gates against fp32" in done.stdout
    tables = markdown_tables({"int8": report})
    assert tables.count("### int8 against fp32") == 2 and tables.count("### int8 gates against fp32") == 2
