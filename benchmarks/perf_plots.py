"""Figures for BENCHMARKS.md from a ``perf.json`` written by :mod:`perf`.

    .venv/bin/python benchmarks/perf_plots.py benchmarks/results/perf.json   # PNGs next to the JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STAGES = ("upload", "queue", "decode", "preprocess", "inference", "explain", "annotations", "encode")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def forward_plot(report: dict[str, Any], path: Path) -> Path:
    engines = report["forward"]["engines"]
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(engines)
    ax.barh(names, [engines[n]["gflops"] for n in names], color="#4477aa")
    if "peak" in report:
        ax.axvline(report["peak"]["peak_gflops"], color="#cc6677", linestyle="--", label="measured fp32 peak")
        ax.legend(loc="lower right")
    ax.set_xlabel("GFLOP/s (FLOPs of the FCN / median forward time)")
    ax.set_title(f"Bare FCN forward, {report['model']['architecture']}, input "
                 f"{report['forward']['input_shape'][2]}x{report['forward']['input_shape'][3]}")
    return _save(fig, path)


def explain_plot(report: dict[str, Any], path: Path) -> Path:
    service = report["service"]
    server = service["sequential"]["server_ms"]
    fig, ax = plt.subplots(figsize=(7, 2.6))
    left = 0.0
    colours = plt.get_cmap("tab10")
    for n, stage in enumerate(s for s in STAGES if s in server):
        width = server[stage] / 1000
        ax.barh(["/explain (server stages)"], [width], left=left, color=colours(n), label=stage)
        left += width
    ax.barh(["/explain (client, end to end)"], [service["sequential"]["explain"]["median_s"]], color="#999999")
    ax.barh(["bare ONNX forward"], [service["sequential"]["bare_forward"]["median_s"]], color="#117733")
    ax.set_xlabel("seconds (median)")
    ax.legend(ncol=4, fontsize=7, loc="lower right")
    ax.set_title(f"/explain vs the bare forward: ratio {service['sequential']['overhead_ratio']:.3f}")
    return _save(fig, path)


def concurrency_plot(report: dict[str, Any], path: Path) -> Path:
    levels = report["service"]["concurrency"]
    clients = [r["clients"] for r in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.plot(clients, [r["throughput_per_s"] for r in levels], marker="o")
    left.set_xlabel("concurrent clients")
    left.set_ylabel("explanations / s")
    left.set_ylim(bottom=0)
    left.set_xticks(clients)
    for q in ("p50_s", "p95_s", "p99_s"):
        right.plot(clients, [r[q] for r in levels], marker="o", label=q[:3])
    right.set_xlabel("concurrent clients")
    right.set_ylabel("latency, s")
    right.set_xticks(clients)
    right.legend()
    fig.suptitle("Closed-loop clients on one service process")
    return _save(fig, path)


def memory_plot(report: dict[str, Any], path: Path) -> Path:
    memory = report["memory"]
    xs, ys = zip(*memory["samples"])
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(xs, ys, marker=".")
    ax.set_xlabel("requests answered")
    ax.set_ylabel("server RSS, MiB")
    ax.set_ylim(0, max(ys) * 1.15)
    ax.set_title(f"Server memory over {memory['requests']} requests (input short side {memory['short_side']})")
    return _save(fig, path)


def scaling_plot(report: dict[str, Any], path: Path) -> Path:
    rows = report["scaling"]["rows"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([r["megapixels"] for r in rows], [r["median_s"] for r in rows], marker="o")
    for r in rows:
        ax.annotate(str(r["short_side"]), (r["megapixels"], r["median_s"]), textcoords="offset points", xytext=(4, -10),
                    fontsize=7)
    ax.set_xlabel("network input, megapixels (labels: short side)")
    ax.set_ylabel("bare ONNX forward, s")
    ax.set_title("Forward time by input size")
    return _save(fig, path)


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """Every figure the report has the data for; returns the files written."""
    written = []
    if "forward" in report:
        written.append(forward_plot(report, out / "forward.png"))
    if "service" in report:
        written.append(explain_plot(report, out / "explain.png"))
        written.append(concurrency_plot(report, out / "concurrency.png"))
    if "memory" in report:
        written.append(memory_plot(report, out / "memory.png"))
    if "scaling" in report:
        written.append(scaling_plot(report, out / "scaling.png"))
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: perf_plots.py PERF_JSON")
    source = Path(sys.argv[1])
    for figure in write_plots(json.loads(source.read_text()), source.parent):
        print(f"wrote {figure}")
