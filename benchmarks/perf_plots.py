"""Figures and Markdown tables for BENCHMARKS.md from a ``perf.json`` written by :mod:`perf`.

    .venv/bin/python benchmarks/perf_plots.py benchmarks/results/perf.json              # PNGs next to the JSON
    .venv/bin/python benchmarks/perf_plots.py benchmarks/results/perf.json --markdown   # also print the tables
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
    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = list(engines)
    ax.barh(names, [engines[n]["gflops"] for n in names], color="#4477aa")
    forward = report["forward"]
    ax.axvline(forward["best_gemm_gflops"], color="#cc6677", linestyle="--", label="best SGEMM of the run")
    probes = sorted(forward["gemm_probes_gflops"])
    ax.axvline(probes[len(probes) // 2], color="#ddaa33", linestyle=":", label="SGEMM probes beside the forwards, median")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=8, frameon=False)
    ax.set_xlabel("GFLOP/s (FLOPs of the FCN / median forward time)")
    ax.set_title(f"Bare FCN forward, {report['model']['architecture']}, input "
                 f"{report['forward']['input_shape'][2]}x{report['forward']['input_shape'][3]}")
    return _save(fig, path)


def explain_plot(report: dict[str, Any], path: Path) -> Path:
    service = report["service"]
    formats = [(key, name) for key, name in (("sequential", "PNG"), ("sequential_dicom", "DICOM")) if key in service]
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.9 * len(formats)))
    colours = plt.get_cmap("tab10")
    labels = []
    for key, name in formats:
        seq = service[key]
        label = f"{name}: server stages"
        left = 0.0
        for n, stage in enumerate(s for s in STAGES if s in seq["server_ms"]):
            width = seq["server_ms"][stage] / 1000
            ax.barh([label], [width], left=left, color=colours(n), label=stage if key == formats[0][0] else None)
            left += width
        ax.barh([f"{name}: end to end"], [seq["explain"]["median_s"]], color="#bbbbbb")
        labels.append(f"{name} {seq['overhead_ratio']:.2f}")
    ax.invert_yaxis()
    ax.set_xlabel("seconds (medians)")
    ax.legend(ncol=4, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    ax.set_title("/explain over loopback; end to end / its own forward: " + ", ".join(labels))
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


def _md(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.3g}"
        return str(v).replace("|", "\\|")  # e.g. "max |Δlogit|": a bare bar would split the cell

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| --- |" + "|".join(" ---: " for _ in header[1:]) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_tables(report: dict[str, Any]) -> str:
    """Every table of the report as Markdown, in the order of BENCHMARKS.md."""
    out = []
    if "peak" in report:
        out.append("### fp32 peak\n\n" + _md(["library", "GFLOP/s"], [[k, v] for k, v in report["peak"]["gflops"].items()]))
    if "forward" in report:
        f = report["forward"]
        out.append(f"### Bare forward, input {f['input_shape']}, {f['gflop']:.1f} GFLOP\n\n" + _md(
            ["engine", "median s", "min s", "GFLOP/s", "share of peak (same moment)", "share of best GEMM"],
            [[k, v["median_s"], v["min_s"], v["gflops"], f"{v['share_of_peak']:.0%}", f"{v['share_of_best_gemm']:.0%}"]
             for k, v in f["engines"].items()]))
    if "onnx_options" in report:
        out.append("### ONNX Runtime options\n\n" + _md(
            ["options", "median s", "vs default"],
            [[k, v["median_s"], v["vs_default"]] for k, v in report["onnx_options"].items()]))
    for key, heading in (("decode", "Decode and resize (ms)"), ("precision", "Forward by precision")):
        if key in report:
            out.append(f"### {heading}\n\n" + _md(report[key]["table"]["header"], report[key]["table"]["rows"]))
    if "peer" in report:
        peer = report["peer"]
        out.append("### Peer\n\n" + _md(["method", "median s", "min s"], [
            ["pytorch-grad-cam GradCAM, one class", peer["gradcam"]["median_s"], peer["gradcam"]["min_s"]],
            [f"forward-only CAM + top-{peer['top_k']}, every class", peer["ours"]["median_s"], peer["ours"]["min_s"]],
            ["ratio", peer["ratio"], ""]]))
    if "service" in report:
        service = report["service"]
        for key, name in (("sequential", "16-bit PNG"), ("sequential_dicom", "DICOM")):
            seq = service[key]
            rows = [["end to end (client)", seq["explain"]["median_s"] * 1000],
                    ["HTTP outside the server's stages", (seq["http_ms"] - seq["server_ms"].get("upload", 0.0))]]
            rows += [[f"server: {stage}", ms] for stage, ms in seq["server_ms"].items() if stage != "total"]
            rows += [["overhead ratio (end to end / its forward)", seq["overhead_ratio"]],
                     ["cross-check: end to end / forward in the benchmark process", seq["vs_in_process_forward"]]]
            out.append(f"### /explain, {name} upload (ms, medians)\n\n" + _md(["", "ms"], rows))
        out.append("### Response size\n\n" + _md(["encoding", "bytes"], [[k, v] for k, v in service["response_bytes"].items()]))
        out.append("### Concurrent clients\n\n" + _md(
            ["clients", "requests", "errors", "req/s", "vs 1 client", "worker busy", "p50 s", "p95 s", "p99 s"],
            [[r["clients"], r["requests"], r["requests"] - r["outcomes"].get("200", 0), r["throughput_per_s"],
              r["vs_single_client"], f"{r['busy_share']:.1%}", r["p50_s"], r["p95_s"], r["p99_s"]]
             for r in service["concurrency"]]))
        out.append("### Cold start\n\n" + _md(["start", "s"], [[n + 1, v] for n, v in enumerate(service["cold_start_s"])]))
    if "memory" in report:
        m = report["memory"]
        out.append("### Memory\n\n" + _md(["", "MiB"], [
            ["RSS when ready", m["rss_ready_mib"]], ["peak RSS", m["rss_peak_mib"]],
            [f"RSS after request {m['warmup_requests']}: lowest", m["warm_min_mib"]],
            [f"RSS after request {m['warmup_requests']}: highest", m["warm_max_mib"]],
            ["trend after warm-up, MiB per 100 requests", m["slope_mib_per_100_requests"]]]))
    if "scaling" in report:
        out.append("### Scaling\n\n" + _md(
            ["short side", "input", "GFLOP", "median s", "GFLOP/s", "SGEMM probe", "share of peak"],
            [[r["short_side"], "x".join(map(str, r["input_hw"])), r["gflop"], r["median_s"], r["gflops"],
              r["gemm_probe_gflops"], f"{r['share_of_peak']:.0%}"] for r in report["scaling"]["rows"]]))
    if "batch" in report:
        out.append("### Batches\n\n" + _md(["batch", "median s", "images/s"],
                                            [[r["batch"], r["median_s"], r["images_per_s"]] for r in report["batch"]["rows"]]))
    for phase in report.get("int8", {}).values():
        out += [f"### {t['title']}\n\n" + _md(t["header"], t["rows"]) for t in phase["tables"]]
    return "\n\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--markdown"):
        sys.exit("usage: perf_plots.py PERF_JSON [--markdown]")
    source = Path(sys.argv[1])
    data = json.loads(source.read_text())
    for figure in write_plots(data, source.parent):
        print(f"wrote {figure}")
    if len(sys.argv) == 3:
        print(markdown_tables(data))
