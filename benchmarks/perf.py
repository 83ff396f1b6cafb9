"""Performance suite: the bare FCN forward, /explain end to end, a Grad-CAM peer, load, memory, cold start, scaling.

Everything runs at real mammogram scale by default: a ResNet-152 with random
weights (:mod:`perf_bundle`) whose uploads are scaled to a short side of
4 × 227 = 908 px, and 16-bit phantom mammograms of 3328 × 2560 px (the
paper's full-field geometry). Phases, in order:

- ``peak``: the machine's measured fp32 peak, the best of square SGEMMs in torch and NumPy.
- ``forward``: the bare FCN forward on the network input of one upload, ONNX Runtime and torch
  (contiguous and channels_last): median seconds, FLOPs / time, and that as a share of the peak.
- ``onnx-options``: ONNX Runtime session options (threads, spinning, layout optimisation), round-robin.
- ``decode``: decoding and resizing the upload, Pillow's way against the service's (deepminer/png.py, strips).
- ``precision``: torch's forward in fp32, bf16 and fp16 (and ONNX fp32; with and without IO binding on CUDA),
  its time and how far each explanation's numbers move from fp32.
- ``peer``: our forward-only CAM plus top-k units against pytorch-grad-cam's GradCAM, same model, same input.
- ``service``: ``python -m service`` on loopback: time until ready (cold start), /explain one at a time
  alternating with the bare ONNX forward in this process (their ratio, server stage timings), response
  sizes, then 1, 2, 4 and 8 concurrent closed-loop clients (throughput, p50/p95/p99), then more cold starts.
- ``memory``: server RSS over ``--memory-requests`` requests from 4 clients, on a copy of the bundle that
  scales uploads to ``--memory-short-side`` (so 500 requests take minutes, not half an hour).
- ``scaling``: the bare ONNX forward at several input sizes.
- ``int8``: the bundle's int8 graph (``python -m training quantize``, made and cached first when the bundle
  has none) against ONNX Runtime fp32, round-robin: time, speed-up, the accuracy gates' figures and the CPU's
  integer instruction sets; then the same on a trained ResNet-18 (``--int8-trained``, by default the demo
  bundle, built and cached on the first run).

Prints a table per phase and writes ``perf.json`` (and with ``--plots`` PNG figures) to ``--out``.

    .venv/bin/python benchmarks/perf.py --out benchmarks/results            # the whole suite (~25 min, 2 cores)
    .venv/bin/python benchmarks/perf.py --phases forward peer --repeats 3
    .venv/bin/python benchmarks/perf.py --depth 18 --short-side 227 --image-size 832 640 --memory-requests 40

Measure on a quiet machine: every phase uses all cores, and the figures are
medians of one run, compared as ratios within that run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from serving import REPO, percentile, post_explain, rss_kib, start_server, stop_server, wait_ready

from deepminer import imaging, png
from deepminer.bundle import Bundle, load_bundle
from deepminer.formulas import class_activation_map, influence, top_units, unit_max_activations
from deepminer.grid import resized_shape
from deepminer.scoring import classifier_probabilities

PHASES = ("peak", "forward", "onnx-options", "decode", "precision", "peer", "service", "memory", "scaling", "int8",
          "batch")
DEFAULT_PHASES = {"cpu": PHASES[:-1], "cuda": tuple(phase for phase in PHASES if phase != "onnx-options")}
CLIENTS = (1, 2, 4, 8)


# ---------------------------------------------------------------- helpers


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "n": len(times)}


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    """Print a plain aligned table."""
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def fcn_flops(depth: int, shape: tuple[int, int]) -> int:
    """FLOPs (2 per multiply-add) of one FCN forward on a ``(1, 3, H, W)`` input, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from deepminer.fcn import build_classifier, to_fcn

    with torch.device("meta"):
        fcn = to_fcn(build_classifier(depth=depth, num_classes=3)).eval()
        x = torch.empty(1, 3, *shape)
    with FlopCounterMode(display=False) as counter:
        fcn(x)
    return int(counter.get_total_flops())


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


# ---------------------------------------------------------------- phases


def onnx_matmul(n: int) -> Callable[[np.ndarray, np.ndarray], object]:
    """``a @ b`` as a one-node ONNX Runtime graph (MLAS, the GEMM behind ONNX Runtime's convolutions)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "sgemm",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda a, b: session.run(None, {"a": a, "b": b})


def measure_peak(repeats: int, device: str) -> dict[str, Any]:
    """The measured fp32 peak: GFLOP/s of an n × n SGEMM (2n³ FLOPs), best of ``repeats``, in each library.

    The peak is the highest of them: the most the cores were seen to deliver to a dense fp32 kernel.
    """
    n = 3072
    a32 = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b32 = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a32), torch.from_numpy(b32)
    flops = 2 * n**3
    if device == "cuda":
        ga, gb = ta.cuda(), tb.cuda()

        def cuda_mm() -> None:
            torch.mm(ga, gb)
            torch.cuda.synchronize()

        results = {"torch.mm (cuda, fp32)": flops / min(timed(cuda_mm, repeats)) / 1e9}
        table(f"fp32 peak (SGEMM {n}x{n} on the GPU, best of {repeats})", ["library", "GFLOP/s"],
              [[k, v] for k, v in results.items()])
        return {"n": n, "gflops": results, "peak_gflops": max(results.values())}
    onnx_mm = onnx_matmul(n)
    results = {
        "onnxruntime MatMul (MLAS)": flops / min(timed(lambda: onnx_mm(a32, b32), repeats)) / 1e9,
        "torch.mm": flops / min(timed(lambda: torch.mm(ta, tb), repeats)) / 1e9,
        "numpy.matmul": flops / min(timed(lambda: a32 @ b32, repeats)) / 1e9,
    }
    table(f"fp32 peak (SGEMM {n}x{n}, best of {repeats})", ["library", "GFLOP/s"],
          [[k, v] for k, v in results.items()])
    return {"n": n, "gflops": results, "peak_gflops": max(results.values())}


def network_input(bundle: Bundle, upload: bytes) -> np.ndarray:
    """The upload decoded and preprocessed exactly as the service does (``Explainer.preprocess``)."""
    pixels = imaging.decode_image(upload).pixels
    return imaging.network_input(pixels, short_side=bundle.input_short_side, mean=bundle.mean, std=bundle.std)


def gemm_probe(device: str, n: int = 3072) -> Callable[[], float]:
    """A callable returning the fp32 GFLOP/s of the best of 3 torch ``n × n`` SGEMMs, measured now."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)

    def mm() -> None:
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    return lambda: 2 * n**3 / min(timed(mm, 3, warmup=0)) / 1e9


def measure_forward(bundle: Bundle, x: np.ndarray, *, repeats: int, peak: float | None, threads: int,
                    device: str) -> dict[str, Any]:
    """The bare FCN forward (backend ``run``: input in, logits and features out as NumPy), against the peak.

    Round-robin: each repetition times an SGEMM probe, then one forward per engine. A shared machine's
    speed drifts by tens of percent over minutes, so each forward is compared with the probe taken
    seconds before it (``share_of_peak``, median over repetitions); ``share_of_best_gemm`` divides the
    median forward rate by the best GEMM rate seen in the run instead (the probes and the ``peak`` phase).
    """
    from service.backends.onnx import OnnxBackend
    from service.backends.torch import TorchBackend

    flops = fcn_flops(int(bundle.meta["model"]["depth"]), (x.shape[2], x.shape[3]))
    engines: dict[str, Callable[[], object]] = {}
    onnx = OnnxBackend(bundle, device=device, intra_op_threads=threads)  # type: ignore[arg-type]
    engines["onnxruntime"] = lambda: onnx.run(x)
    for name, layout in (("torch", "contiguous"), ("torch channels_last", "channels_last")):
        backend = TorchBackend(bundle, device=device, intra_op_threads=threads,  # type: ignore[arg-type]
                               memory_format=layout)
        engines[name] = lambda b=backend: b.run(x)  # type: ignore[misc]
    probe = gemm_probe(device)
    for fn in engines.values():
        fn()  # warm-up
    probes: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        probes.append(probe())
        for name, fn in engines.items():
            times[name].extend(timed(fn, 1, warmup=0))
    best_gemm = max([*probes, peak or 0.0])
    results: dict[str, Any] = {}
    for name, t in times.items():
        s = summary(t)
        s["gflops"] = flops / s["median_s"] / 1e9
        s["share_of_peak"] = statistics.median(flops / ti / 1e9 / g for ti, g in zip(t, probes))
        s["share_of_best_gemm"] = s["gflops"] / best_gemm
        results[name] = s
    provider = onnx.provider
    onnx.close()
    table(f"bare FCN forward, input {tuple(x.shape)}, {flops / 1e9:.1f} GFLOP, round-robin with an SGEMM probe, "
          f"median of {repeats}",
          ["engine", "median s", "min s", "GFLOP/s", "share of peak (same moment)", "share of best GEMM"],
          [[k, v["median_s"], v["min_s"], v["gflops"], f"{v['share_of_peak']:.0%}", f"{v['share_of_best_gemm']:.0%}"]
           for k, v in results.items()])
    print(f"  SGEMM probes: median {statistics.median(probes):.0f}, best {max(probes):.0f} GFLOP/s; "
          f"best GEMM of the run {best_gemm:.0f} GFLOP/s")
    return {"input_shape": list(x.shape), "gflop": flops / 1e9, "provider": provider, "engines": results,
            "gemm_probes_gflops": probes, "best_gemm_gflops": best_gemm}


def measure_onnx_options(bundle: Bundle, x: np.ndarray, *, repeats: int) -> dict[str, Any]:
    """The bare ONNX Runtime forward under session options that could matter, run round-robin."""
    import onnxruntime as ort

    from deepminer.bundle import ONNX_FILE

    def session(**config: Any) -> Callable[[], object]:
        options = ort.SessionOptions()
        for key, value in config.get("attrs", {}).items():
            setattr(options, key, value)
        for key, value in config.get("entries", {}).items():
            options.add_session_config_entry(key, value)
        s = ort.InferenceSession(str(bundle.path(ONNX_FILE)), sess_options=options, providers=["CPUExecutionProvider"])
        return lambda: s.run(None, {"image": x})

    cores = os.cpu_count() or 1
    variants = {
        "default (the service's)": session(),
        "intra_op_num_threads=1": session(attrs={"intra_op_num_threads": 1}),
        f"intra_op_num_threads={cores}, no spinning": session(
            attrs={"intra_op_num_threads": cores}, entries={"session.intra_op.allow_spinning": "0"}),
        "graph optimisation EXTENDED (no NCHWc layout)": session(
            attrs={"graph_optimization_level": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].extend(timed(fn, 1, warmup=0))
    results = {name: summary(t) for name, t in times.items()}
    reference = results["default (the service's)"]["median_s"]
    for r in results.values():
        r["vs_default"] = r["median_s"] / reference
    table(f"ONNX Runtime session options, bare forward {tuple(x.shape)}, round-robin, median of {repeats}",
          ["options", "median s", "min s", "vs default"],
          [[k, v["median_s"], v["min_s"], v["vs_default"]] for k, v in results.items()])
    return results


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Decoding and resizing without the helper threads (:mod:`deepminer.threads`), as before they existed."""
    saved = png.worth_splitting, imaging.worth_splitting
    png.worth_splitting = imaging.worth_splitting = lambda pixels: False  # type: ignore[assignment]
    try:
        yield
    finally:
        png.worth_splitting, imaging.worth_splitting = saved


def measure_decode(bundle: Bundle, upload: bytes, *, rounds: int) -> dict[str, Any]:
    """The upload's decode and resize, Pillow's way (before) against the service's, round-robin."""
    from PIL import Image

    pixels = imaging.decode_image(upload).pixels
    shape = resized_shape(pixels.shape[0], pixels.shape[1], bundle.input_short_side)

    def fast_decode_one_thread() -> None:
        with one_thread():
            imaging.decode_image(upload)

    def pillow_resize() -> None:
        Image.fromarray(pixels, mode="F").resize((shape[1], shape[0]), Image.Resampling.BILINEAR)

    def strips_one_thread() -> None:
        with one_thread():
            imaging.resize(pixels, shape)

    variants: dict[str, Callable[[], object]] = {
        "decode: Pillow, then scale to float (before)": lambda: imaging.decode_with_pillow(upload),
        "decode: ISA-L + numba rows, one thread": fast_decode_one_thread,
        "decode: ISA-L + numba rows on a helper thread (service)": lambda: imaging.decode_image(upload),
        "resize: one Pillow resize (before)": pillow_resize,
        "resize: 4 strips, one thread": strips_one_thread,
        "resize: 4 strips on helper threads (service)": lambda: imaging.resize(pixels, shape),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up: numba's compile, the helper threads
    for _ in range(rounds):
        for name, fn in variants.items():
            started = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - started)
    results = {name: summary(times) for name, times in samples.items()}
    before = {"decode": results["decode: Pillow, then scale to float (before)"]["median_s"],
              "resize": results["resize: one Pillow resize (before)"]["median_s"]}
    title = (f"decode and resize of the {len(upload) / 1e6:.1f} MB upload ({pixels.shape[0]} x {pixels.shape[1]} px, "
             f"to {shape[0]} x {shape[1]}), {rounds} rounds round-robin")
    header = ["variant", "median ms", "min ms", "vs before"]
    rows = [[name, r["median_s"] * 1000, r["min_s"] * 1000, r["median_s"] / before[name.split(":")[0]]]
            for name, r in results.items()]
    table(title, header, rows)
    return {"rounds": rounds, "results": results, "samples": samples, "table": {"header": header, "rows": rows}}


def measure_precision(bundle: Bundle, upload: bytes, *, repeats: int, top_k: int, device: str) -> dict[str, Any]:
    """Torch's forward in fp32, bf16 and fp16 (DEEPMINER_PRECISION), round-robin: time, and agreement with fp32.

    Agreement is over what /explain returns: logits (as a share of the fp32 logits' range), class
    probabilities, the predicted class, each class's top-k units by influence, and the CAM.
    """
    from service.backends.onnx import OnnxBackend
    from service.backends.torch import TorchBackend
    from service.errors import ServiceError

    x = network_input(bundle, upload)
    engines: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for precision in ("fp32", "bf16", "fp16"):
        try:
            engines[f"torch {precision}"] = TorchBackend(bundle, device=device, precision=precision)  # type: ignore[arg-type]
        except ServiceError as exc:
            refused[f"torch {precision}"] = exc.message
    engines["onnx fp32"] = OnnxBackend(bundle, device=device)
    if device == "cuda":
        engines["onnx fp32, no IO binding"] = OnnxBackend(bundle, device=device, io_binding=False)
    samples: dict[str, list[float]] = {name: [] for name in engines}
    outputs: dict[str, tuple[np.ndarray, np.ndarray] | str] = {}
    for round_ in range(repeats + 1):  # the first round warms up
        for name, engine in engines.items():
            started = time.perf_counter()
            try:
                outputs[name] = engine.run(x)
            except ServiceError as exc:  # fp16 overflow: the service answers 503 precision_overflow
                outputs[name] = exc.message
            if round_:
                samples[name].append(time.perf_counter() - started)
    reference = outputs["torch fp32"]
    assert not isinstance(reference, str)
    agreement = {name: compare_outputs(bundle, out, reference, top_k) if not isinstance(out, str) else {"error": out}
                 for name, out in outputs.items() if name != "torch fp32"}
    base = statistics.median(samples["torch fp32"])
    results = {name: summary(times) for name, times in samples.items()}
    rows = []
    for name in engines:
        found = agreement.get(name)
        if found is None:
            figures: list[object] = ["(reference)"] + [""] * 4
        elif "error" in found:
            figures = [found["error"][:60]] + [""] * 4
        else:
            figures = [found[key] for key in ("logit_error", "probability_error", "same_class", "top_k_shared",
                                              "cam_error")]
        rows.append([name, results[name]["median_s"], results[name]["median_s"] / base, *figures])
    header = ["engine", "median s", "vs torch fp32", "max |Δlogit| / range", "max |Δp|", "same class",
              f"top-{top_k} shared (worst class)", "max |ΔCAM| / range"]
    rows += [[name, "refused: " + why[:60], "", "", "", "", "", ""] for name, why in refused.items()]
    table(f"forward by precision on {device}, input {x.shape[2]} x {x.shape[3]}, {repeats} rounds round-robin "
          f"(agreement with torch fp32)", header, rows)
    return {"repeats": repeats, "results": results, "samples": samples, "agreement": agreement, "refused": refused,
            "table": {"header": header, "rows": rows}}


def compare_outputs(bundle: Bundle, out: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray],
                    top_k: int) -> dict[str, Any]:
    """How far ``out`` is from ``reference`` in everything an explanation is made of."""
    (logits, features), (logits32, features32) = out, reference
    finite = bool(np.isfinite(logits).all() and np.isfinite(features).all())
    p, p32 = classifier_probabilities(logits), classifier_probabilities(logits32)
    weight, _ = bundle.head
    scores, scores32 = influence(features, weight), influence(features32, weight)  # max_xy A_k once per output
    shared = min(len(set(top_units(scores[c], top_k).tolist()) & set(top_units(scores32[c], top_k).tolist()))
                 for c in range(len(p)))
    explained = int(np.argmax(p32))
    cam, cam32 = (class_activation_map(f, weight, explained) for f in (features, features32))
    return {
        "finite": finite,
        "logit_error": float(np.abs(logits - logits32).max() / np.ptp(logits32)),
        "probability_error": float(np.abs(p - p32).max()),
        "same_class": bool(np.argmax(p) == explained),
        "top_k_shared": shared,
        "cam_error": float(np.abs(cam - cam32).max() / np.ptp(cam32)),
    }


def measure_peer(bundle: Bundle, x: np.ndarray, *, repeats: int, top_k: int, threads: int,
                 device: str) -> dict[str, Any]:
    """Forward-only CAM + top-k units (torch backend) against pytorch-grad-cam's GradCAM on the same model and input."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from deepminer.fcn import load_classifier
    from service.backends.torch import TorchBackend

    backend = TorchBackend(bundle, device=device, intra_op_threads=threads,  # type: ignore[arg-type]
                           memory_format="channels_last")
    weight, _ = bundle.head

    def ours() -> None:
        logits, features = backend.run(x)
        explained = int(np.argmax(classifier_probabilities(logits)))
        class_activation_map(features, weight, explained)
        maxima = unit_max_activations(features)  # max_xy A_k once, as the service does
        top_units(influence(maxima[:, None, None], weight)[explained], top_k)

    classifier = load_classifier(bundle)
    classifier.eval().to(device)
    tensor = torch.from_numpy(x).to(device)
    targets = [ClassifierOutputTarget(0)]
    gradcam_times: list[float] = []
    ours_times: list[float] = []
    with GradCAM(model=classifier, target_layers=[classifier.layer4[-1]]) as gradcam:
        run_gradcam = lambda: gradcam(input_tensor=tensor, targets=targets)
        run_gradcam(), ours()  # warm-up
        for _ in range(repeats):  # alternating, so drift of a shared machine hits both alike
            gradcam_times.extend(timed(run_gradcam, 1, warmup=0))
            ours_times.extend(timed(ours, 1, warmup=0))
    ratio = statistics.median(gradcam_times) / statistics.median(ours_times)
    table(f"peer: GradCAM (one class) vs forward-only CAM + top-{top_k} (every class), torch, alternating, "
          f"median of {repeats}",
          ["method", "median s", "min s"],
          [["pytorch-grad-cam GradCAM", statistics.median(gradcam_times), min(gradcam_times)],
           ["DeepMiner forward-only", statistics.median(ours_times), min(ours_times)],
           ["ratio (GradCAM / ours)", ratio, ""]])
    return {"gradcam": summary(gradcam_times), "ours": summary(ours_times), "ratio": ratio, "top_k": top_k}


async def load(base: str, upload: bytes, *, clients: int, per_client: int, params: dict[str, str],
               timeout_s: float, on_answer: Callable[[int], None] | None = None) -> dict[str, Any]:
    """``clients`` closed-loop clients, each sending ``per_client`` uploads one after another."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    sizes: list[int] = []
    server_ms: list[dict[str, float]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) as client:

        async def one_client() -> None:
            for _ in range(per_client):
                answer = await post_explain(client, upload, params=params, outcomes=outcomes)
                if answer is not None and answer[0].status_code == 200:
                    latencies.append(answer[1])
                    sizes.append(len(answer[0].content))
                    server_ms.append(answer[0].json()["timings_ms"])
                if on_answer is not None:
                    on_answer(sum(outcomes.values()))

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": sum(outcomes.values()),
        "outcomes": dict(outcomes),
        "wall_s": wall,
        "throughput_per_s": outcomes["200"] / wall,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
        "latencies_s": latencies,
        "response_bytes": sizes,
        "server_ms": {stage: statistics.median(t[stage] for t in server_ms) for stage in server_ms[0]}
        if server_ms else {},
        # Seconds a worker spent on each answered request (everything but the upload and the wait for a worker).
        "work_s": [(t["total"] - t.get("upload", 0.0) - t.get("queue", 0.0)) / 1000 for t in server_ms],
    }


def serve(bundle: Bundle, workdir: Path, env: dict[str, str]) -> tuple[Any, str, Path, float]:
    """Start the service on ``bundle``; return the process, its base URL, log and seconds until /readyz said ready."""
    started = time.perf_counter()
    process, base, log = start_server(bundle.root, workdir, env)
    wait_ready(process, base, log, timeout_s=600.0, poll_s=0.05)
    return process, base, log, time.perf_counter() - started


def phantom_dicom(png: bytes) -> bytes:
    """The phantom PNG as an uncompressed 16-bit MG For Presentation Part 10 file, as a PACS sends it."""
    from PIL import Image
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = uid.UID("1.2.840.10008.5.1.4.1.1.1.2")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
    ds.Modality = "MG"
    ds.set_pixel_data(np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint16), "MONOCHROME2", 16)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def interleaved(bundle: Bundle, base: str, upload: bytes, *, repeats: int, params: dict[str, str],
                threads: int, device: str, filename: str = "mammogram.png") -> dict[str, Any]:
    """/explain one at a time against the bare ONNX forward on the same upload, the two alternating.

    Alternating pairs cancel the drift of a shared machine between two separate series; each pair is run in
    alternating order. The bare forward runs in this process while the server idles, and the other way round.
    """
    from service.backends.onnx import OnnxBackend

    bare_backend = OnnxBackend(bundle, device=device, intra_op_threads=threads)  # type: ignore[arg-type]
    x = network_input(bundle, upload)
    pairs = []
    with httpx.Client(base_url=base, timeout=600.0) as client:

        def bare() -> float:
            started = time.perf_counter()
            bare_backend.run(x)
            return time.perf_counter() - started

        def explain() -> tuple[float, dict[str, float]]:
            started = time.perf_counter()
            response = client.post("/explain", files={"file": (filename, upload)}, params=params)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            return elapsed, response.json()["timings_ms"]

        bare(), explain()  # warm both
        for n in range(repeats):
            if n % 2:
                (e2e, server), forward = explain(), bare()
            else:
                forward, (e2e, server) = bare(), explain()
            pairs.append({"bare_s": forward, "explain_s": e2e, "server_ms": server,
                          "http_ms": e2e * 1000 - server["total"] + server.get("upload", 0.0),
                          "over_inference": e2e * 1000 / server["inference"]})
    bare_backend.close()
    bare_s = statistics.median(p["bare_s"] for p in pairs)
    explain_s = statistics.median(p["explain_s"] for p in pairs)
    stages = {stage: statistics.median(p["server_ms"][stage] for p in pairs) for stage in pairs[0]["server_ms"]}
    return {
        "bare_forward": summary([p["bare_s"] for p in pairs]),
        "explain": summary([p["explain_s"] for p in pairs]),
        # The headline: each request's end-to-end time over its own forward pass (the server's inference stage,
        # backend.run on that request's input), so both sides are measured at the same moment.
        "overhead_ratio": statistics.median(p["over_inference"] for p in pairs),
        # Cross-checks against the forward timed in this process: ratio of the medians, median of pair ratios.
        "vs_in_process_forward": explain_s / bare_s,
        "pair_ratios_median": statistics.median(p["explain_s"] / p["bare_s"] for p in pairs),
        "server_inference_vs_in_process": statistics.median(p["server_ms"]["inference"] / 1000 for p in pairs) / bare_s,
        "server_ms": stages,
        "http_ms": statistics.median(p["http_ms"] for p in pairs),
        "pairs": pairs,
    }


def concurrency_levels(base: str, upload: bytes, *, clients: list[int], per_level: int,
                       params: dict[str, str]) -> list[dict[str, Any]]:
    """Closed-loop load at each client count, in two blocks ordered A B C D D C B A.

    A shared machine drifts by several percent over minutes; the mirrored order gives every level the same
    mean position in time, so a linear drift cancels out of the comparison between levels.
    """
    blocks: dict[int, list[dict[str, Any]]] = {n: [] for n in clients}
    for n in [*clients, *reversed(clients)]:
        per_client = max(2, -(-per_level // (2 * n)))
        blocks[n].append(asyncio.run(load(base, upload, clients=n, per_client=per_client, params=params,
                                          timeout_s=600.0)))
    levels = []
    for n in clients:
        latencies = [v for b in blocks[n] for v in b["latencies_s"]]
        work = [v for b in blocks[n] for v in b["work_s"]]
        wall = sum(b["wall_s"] for b in blocks[n])
        outcomes: Counter[str] = Counter()
        for b in blocks[n]:
            outcomes.update(b["outcomes"])
        levels.append({
            "clients": n,
            "requests": sum(outcomes.values()),
            "outcomes": dict(outcomes),
            "wall_s": wall,
            "throughput_per_s": outcomes["200"] / wall,
            # Share of the wall time a worker was busy: 1.0 means the single worker never waited for work.
            "busy_share": sum(work) / wall,
            "work_median_s": statistics.median(work) if work else float("nan"),
            "p50_s": percentile(latencies, 50),
            "p95_s": percentile(latencies, 95),
            "p99_s": percentile(latencies, 99),
            "latencies_s": latencies,
            "server_ms": {stage: statistics.median(b["server_ms"][stage] for b in blocks[n])
                          for stage in blocks[n][0]["server_ms"]},
        })
    return levels


def measure_service(bundle: Bundle, upload: bytes, *, repeats: int, clients: list[int], per_level: int,
                    cold_starts: int, env: dict[str, str], top_k: int, threads: int, device: str) -> dict[str, Any]:
    """Cold start, /explain one at a time against the bare forward, response sizes, and 1-8 concurrent clients."""
    params = {"top_k": str(top_k)}
    out: dict[str, Any] = {"env": env, "upload_bytes": len(upload), "top_k": top_k}
    with tempfile.TemporaryDirectory(prefix="deepminer-perf-") as tmp:
        process, base, _, ready_s = serve(bundle, Path(tmp), env)
        cold = [ready_s]
        try:
            out["rss_ready_mib"] = rss_kib(process.pid) / 1024
            out["sequential"] = interleaved(bundle, base, upload, repeats=repeats, params=params, threads=threads,
                                            device=device)
            dicom = phantom_dicom(upload)
            out["sequential_dicom"] = interleaved(bundle, base, dicom, repeats=repeats, params=params,
                                                  threads=threads, device=device, filename="mammogram.dcm")
            out["dicom_bytes"] = len(dicom)
            sizes = {}
            for name, extra in (("uint16 (default)", {}), ("maps=json", {"maps": "json"}),
                                ("overlays=png", {"overlays": "png"})):
                answer = httpx.post(f"{base}/explain", files={"file": ("m.png", upload, "image/png")},
                                    params={**params, **extra}, timeout=600.0)
                answer.raise_for_status()
                sizes[name] = len(answer.content)
            out["response_bytes"] = sizes
            levels = concurrency_levels(base, upload, clients=clients, per_level=per_level, params=params)
            out["concurrency"] = levels
            out["rss_after_mib"] = rss_kib(process.pid) / 1024
        finally:
            stop_server(process)
        for _ in range(cold_starts):
            process, _, _, ready_s = serve(bundle, Path(tmp), env)
            stop_server(process)
            cold.append(ready_s)
    out["cold_start_s"] = cold
    single = levels[0]["throughput_per_s"]
    for level in levels:
        level["vs_single_client"] = level["throughput_per_s"] / single if single else None
    for key, name, size in (("sequential", "16-bit PNG", len(upload)), ("sequential_dicom", "DICOM", out["dicom_bytes"])):
        seq = out[key]
        table(f"/explain over loopback, one at a time, {name} upload of {size / 1e6:.1f} MB, {repeats} requests "
              "alternating with the bare ONNX forward in this process (medians)", ["", "seconds"],
              [["/explain end to end (client)", seq["explain"]["median_s"]],
               ["overhead: end to end / its own forward (median)", seq["overhead_ratio"]],
               ["bare ONNX forward (this process)", seq["bare_forward"]["median_s"]],
               ["end to end / this process's forward, medians", seq["vs_in_process_forward"]],
               ["median of those pair ratios", seq["pair_ratios_median"]],
               ["server forward / this process's forward", seq["server_inference_vs_in_process"]],
               ["HTTP (client - server, upload included)", seq["http_ms"] / 1000]]
              + [[f"server {stage}", ms / 1000] for stage, ms in seq["server_ms"].items()])
    table(f"response size, top-{top_k}", ["encoding", "bytes"], [[k, v] for k, v in sizes.items()])
    table("concurrent closed-loop clients (blocks in mirrored order)",
          ["clients", "requests", "outcomes", "req/s", "vs 1 client", "worker busy", "p50 s", "p95 s", "p99 s"],
          [[r["clients"], r["requests"], r["outcomes"], r["throughput_per_s"], r["vs_single_client"],
            f"{r['busy_share']:.0%}", r["p50_s"], r["p95_s"], r["p99_s"]] for r in levels])
    table("cold start: process start until /readyz is 200", ["start", "seconds"],
          [[n + 1, s] for n, s in enumerate(cold)])
    return out


def measure_memory(bundle: Bundle, upload: bytes, *, requests: int, env: dict[str, str], every: int) -> dict[str, Any]:
    """Server RSS (process and children) after every ``every`` answers of ``requests`` from 4 clients."""
    clients = 4
    samples: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="deepminer-perf-") as tmp:
        process, base, _, _ = serve(bundle, Path(tmp), env)
        try:
            samples.append((0, rss_kib(process.pid) / 1024))

            def sample(answered: int) -> None:
                if answered % every == 0:
                    samples.append((answered, rss_kib(process.pid) / 1024))

            result = asyncio.run(load(base, upload, clients=clients, per_client=-(-requests // clients),
                                      params={}, timeout_s=600.0, on_answer=sample))
        finally:
            stop_server(process)
    warmup = max(every, requests // 5)
    warm = [(n, rss) for n, rss in samples if n >= warmup]
    slope = float(np.polyfit(*zip(*warm), 1)[0]) * 100 if len(warm) > 2 else float("nan")
    out = {
        "short_side": bundle.input_short_side,
        "requests": result["requests"],
        "outcomes": result["outcomes"],
        "samples": samples,
        "rss_ready_mib": samples[0][1],
        "rss_peak_mib": max(r for _, r in samples),
        "warmup_requests": warmup,
        "warm_min_mib": min(r for _, r in warm),
        "warm_max_mib": max(r for _, r in warm),
        "slope_mib_per_100_requests": slope,
        "p50_s": result["p50_s"],
    }
    table(f"server RSS over {result['requests']} requests (4 clients, short side {bundle.input_short_side})",
          ["after requests", "RSS MiB"], [[n, r] for n, r in samples[:: max(1, len(samples) // 10)]])
    print(f"  outcomes {result['outcomes']}; after request {warmup}: RSS {out['warm_min_mib']:.1f} to "
          f"{out['warm_max_mib']:.1f} MiB, trend {slope:+.2f} MiB per 100 requests (least squares)")
    return out


def measure_batch(bundle: Bundle, x: np.ndarray, *, sizes: list[int], repeats: int, threads: int,
                  device: str) -> dict[str, Any]:
    """Images per second of the ONNX backend's ``run_batch`` on ``n`` copies of the input (micro-batching)."""
    from service.backends.onnx import OnnxBackend

    onnx = OnnxBackend(bundle, device=device, intra_op_threads=threads)  # type: ignore[arg-type]
    rows = []
    for n in sizes:
        batch = np.repeat(x, n, axis=0)
        s = summary(timed(lambda b=batch: onnx.run_batch(b), repeats))
        rows.append({"batch": n, **s, "images_per_s": n / s["median_s"]})
    onnx.close()
    table(f"ONNX Runtime on {device}, batches of the input {tuple(x.shape[1:])}, median of {repeats}",
          ["batch", "median s (latency)", "images/s"], [[r["batch"], r["median_s"], r["images_per_s"]] for r in rows])
    return {"device": device, "provider": onnx.provider, "rows": rows}


def measure_scaling(bundle: Bundle, pixels: np.ndarray, *, sides: list[int], repeats: int, threads: int,
                    device: str) -> dict[str, Any]:
    """The bare ONNX forward with the upload scaled to each short side, each after an SGEMM probe."""
    from service.backends.onnx import OnnxBackend

    onnx = OnnxBackend(bundle, device=device, intra_op_threads=threads)  # type: ignore[arg-type]
    depth = int(bundle.meta["model"]["depth"])
    probe = gemm_probe(device)
    rows = []
    for side in sides:
        x = imaging.network_input(pixels, short_side=side, mean=bundle.mean, std=bundle.std)
        flops = fcn_flops(depth, (x.shape[2], x.shape[3]))
        gemm = probe()
        s = summary(timed(lambda x=x: onnx.run(x), repeats))
        rows.append({"short_side": side, "input_hw": [x.shape[2], x.shape[3]],
                     "megapixels": x.shape[2] * x.shape[3] / 1e6, "gflop": flops / 1e9, **s,
                     "gflops": flops / s["median_s"] / 1e9, "gemm_probe_gflops": gemm,
                     "share_of_peak": flops / s["median_s"] / 1e9 / gemm})
    onnx.close()
    table(f"bare ONNX forward by input size, median of {repeats}",
          ["short side", "input H x W", "GFLOP", "median s", "GFLOP/s", "SGEMM probe", "share of peak"],
          [[r["short_side"], "x".join(map(str, r["input_hw"])), r["gflop"], r["median_s"], r["gflops"],
            r["gemm_probe_gflops"], f"{r['share_of_peak']:.0%}"] for r in rows])
    return {"rows": rows}


def int8_bundle(bundle: Bundle, cache: Path, *, candidates: list[Any], calibration: list[Any] | None,
                test: list[Any] | None) -> Bundle:
    """``bundle`` if it has an int8 graph, else a cached copy quantized by ``python -m training quantize``'s code.

    ``calibration`` and ``test``: the images to calibrate and gate on (None: the bundle's hold-out and test split).
    """
    import shutil

    from deepminer.bundle import META_FILE
    from training.quantize.command import quantize_bundle

    if bundle.int8 is not None:
        return bundle
    tag = "-".join(f"{c.method}.{c.region}" for c in candidates)
    out = cache / f"{bundle.root.name}-int8-{tag}"
    if not (out / META_FILE).is_file():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(bundle.root, out)
        quantize_bundle(out, candidates=candidates, calibration=calibration, test=test)
    return load_bundle(out)


def measure_int8(bundle: Bundle, x: np.ndarray, *, repeats: int, threads: int, device: str) -> dict[str, Any]:
    """The int8 graph against ONNX Runtime fp32 on ``x``, round-robin; with the gates ``quantize`` stored."""
    from service.backends.onnx import OnnxBackend
    from training.quantize import cpu_info

    int8 = bundle.int8
    assert int8 is not None
    engines = {precision: OnnxBackend(bundle, device=device, intra_op_threads=threads,  # type: ignore[arg-type]
                                      precision=precision) for precision in ("fp32", "int8")}
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for round_ in range(repeats + 1):  # the first round warms up
        for name, engine in engines.items():
            started = time.perf_counter()
            engine.run(x)
            if round_:
                samples[name].append(time.perf_counter() - started)
    provider = engines["int8"].provider
    for engine in engines.values():
        engine.close()
    results = {name: summary(t) for name, t in samples.items()}
    speedup = results["fp32"]["median_s"] / results["int8"]["median_s"]
    rounds = statistics.median(a / b for a, b in zip(samples["fp32"], samples["int8"]))
    cpu = cpu_info()
    gates, quantization = int8["gates"], int8["quantization"]
    tables = [{
        "title": f"int8 against fp32, ONNX Runtime ({provider}), {bundle.meta['model']['architecture']}, input "
                 f"{x.shape[2]} x {x.shape[3]}, {repeats} rounds round-robin; CPU {cpu['model']} "
                 f"({', '.join(cpu['instruction_sets']) or 'no AVX2'})",
        "header": ["engine", "median s", "min s", "speed-up (medians)", "median of round ratios"],
        "rows": [["onnx fp32", results["fp32"]["median_s"], results["fp32"]["min_s"], 1.0, 1.0],
                 [f"onnx int8 ({quantization['calibration']['method']}, float: {quantization['float_region']})",
                  results["int8"]["median_s"], results["int8"]["min_s"], speedup, rounds]],
    }, {
        "title": f"int8 gates against fp32 on {gates['images']} test images (python -m training quantize)",
        "header": ["gate", "figure (worst class)", "bound", "holds"],
        "rows": [[name, "n/a" if c["value"] is None else c["value"], c["bound"], c["pass"]]
                 for name, c in gates["checks"].items()],
    }]
    trials = int8.get("trials", [])
    if len(trials) > 1:
        tables.append({
            "title": "quantize's trials (speed-up from its own round-robin timing)",
            "header": ["calibration", "float", "speed-up", "gates", *gates["checks"]],
            "rows": [[t["calibration"], t["float_region"], t["speedup_vs_fp32"], t["gates_pass"],
                      *["n/a" if v is None else v for v in t["checks"].values()]] for t in trials],
        })
    for t in tables:
        table(t["title"], t["header"], t["rows"])
    return {"bundle": bundle.id, "architecture": bundle.meta["model"]["architecture"], "input_shape": list(x.shape),
            "provider": provider, "cpu": cpu, "repeats": repeats, "results": results, "samples": samples,
            "speedup": speedup, "round_ratio_median": rounds, "quantization": quantization, "gates": gates,
            "trials": trials, "tables": tables}


def demo_bundle(cache: Path) -> Bundle:
    """The demo's trained ResNet-18 (``python -m training demo``), built into ``cache`` on the first call."""
    from deepminer.bundle import META_FILE
    from training.cli import main as training_main

    out = cache / "demo-resnet18"
    if not (out / META_FILE).is_file():
        if training_main(["demo", "--out", str(out), "--data", str(cache / "demo-phantoms")]) != 0:
            raise RuntimeError("python -m training demo failed")
    return load_bundle(out)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results",
                        help="where perf.json and the figures go (default %(default)s)")
    parser.add_argument("--phases", nargs="+", choices=PHASES,
                        help="phases to run (default: all but batch on cpu; all but onnx-options on cuda)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the engines run (cuda needs onnxruntime-gpu and a GPU); default %(default)s")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8],
                        help="batch sizes of the batch phase (default %(default)s)")
    parser.add_argument("--depth", type=int, default=152, help="ResNet depth (default %(default)s)")
    parser.add_argument("--bundle", type=Path,
                        help="measure this bundle (e.g. a trained one, for the precision phase) instead of a random "
                             "ResNet; --depth and --short-side then come from its meta.json")
    parser.add_argument("--short-side", type=int, default=908, help="network input short side (default %(default)s)")
    parser.add_argument("--image-size", type=int, nargs=2, default=(3328, 2560), metavar=("ROWS", "COLS"),
                        help="uploaded phantom mammogram size (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (default %(default)s)")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS),
                        help="concurrency levels of the service phase; the first is the reference (default %(default)s)")
    parser.add_argument("--pairs", type=int, default=11,
                        help="alternating bare-forward / explain pairs of the service phase (default %(default)s)")
    parser.add_argument("--per-level", type=int, default=12,
                        help="requests per concurrency level, at least 2 per client (default %(default)s)")
    parser.add_argument("--cold-starts", type=int, default=2, help="extra cold starts after the load (default %(default)s)")
    parser.add_argument("--memory-requests", type=int, default=500, help="requests of the memory phase")
    parser.add_argument("--memory-short-side", type=int, default=227,
                        help="input short side of the memory phase's bundle copy (default %(default)s)")
    parser.add_argument("--scaling", type=int, nargs="+", default=[227, 454, 681, 908, 1135],
                        help="short sides of the scaling phase (default %(default)s)")
    parser.add_argument("--top-k", type=int, default=5, help="units per explanation (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="threads per inference; 0: the engines' default")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                        / "deepminer-bench", help="where bundles and phantoms are kept between runs")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the service (repeatable)")
    parser.add_argument("--int8-candidates", nargs="+", metavar="METHOD:REGION",
                        default=["minmax:none", "minmax:layer4", "entropy:layer4", "percentile:layer4"],
                        help="calibration methods and float regions `quantize` tries on the measured bundle when it "
                        "has no int8 graph (default %(default)s)")
    parser.add_argument("--int8-trained", type=Path,
                        help="trained bundle the int8 phase measures too (default: the demo bundle, built in --cache "
                        "on the first run; quantized with every candidate when it has no int8 graph)")
    parser.add_argument("--plots", action="store_true", help="also write PNG figures next to perf.json")
    args = parser.parse_args(argv)
    args.phases = args.phases or list(DEFAULT_PHASES[args.device])
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # tables appear as phases finish

    from perf_bundle import random_bundle, resized_bundle

    from training.manifest import read_manifest
    from training.phantoms import PhantomConfig, generate_phantoms
    from training.quantize import CALIBRATION_METHODS, FLOAT_REGIONS

    rows, cols = args.image_size
    if not 0.6 <= cols / rows <= 0.8:
        parser.error(f"--image-size {rows} {cols}: columns / rows must be in [0.6, 0.8] (portrait mammogram)")
    args.cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bundle is not None:
        given = load_bundle(args.bundle)
        args.depth, args.short_side = int(given.meta["model"]["depth"]), given.input_short_side
    print(f"preparing phantoms and the resnet{args.depth} bundle in {args.cache} (first run only)")
    phantom_dir = args.cache / f"phantoms-{rows}x{cols}"
    manifest = phantom_dir / "manifest.csv"
    if not manifest.is_file():
        generate_phantoms(phantom_dir, config=PhantomConfig(n_cases=1, height=rows, aspect=cols / rows,
                                                            normal_fraction=0.0, seed=7), workers=1)
    records = read_manifest(manifest)
    bundle = given if args.bundle is not None else random_bundle(args.cache, depth=args.depth,
                                                                  short_side=args.short_side, ranking_images=records)
    upload = records[0].image_path.read_bytes()
    pixels = imaging.decode_image(upload).pixels
    x = network_input(bundle, upload)
    env = {"DEEPMINER_DEVICE": args.device, **dict(item.split("=", 1) for item in args.env)}
    if args.threads:
        env.setdefault("DEEPMINER_INTRA_OP_THREADS", str(args.threads))

    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {**machine(), "device": args.device,
                    "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None},
        "model": {"architecture": f"resnet{args.depth}", "weights": "random" if args.bundle is None else "trained",
                  "bundle": bundle.id,
                  "short_side": args.short_side, "upload": {"rows": int(pixels.shape[0]), "cols": int(pixels.shape[1]),
                                                            "bytes": len(upload), "format": "16-bit PNG phantom"}},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    out_file = args.out / "perf.json"

    def save() -> None:
        out_file.write_text(json.dumps(report, indent=1, default=float) + "\n")

    peak = None
    if "peak" in args.phases:
        report["peak"] = measure_peak(args.repeats, args.device)
        peak = report["peak"]["peak_gflops"]
        save()
    if "forward" in args.phases:
        report["forward"] = measure_forward(bundle, x, repeats=args.repeats, peak=peak, threads=args.threads,
                                            device=args.device)
        save()
    if "onnx-options" in args.phases and args.device == "cpu":
        report["onnx_options"] = measure_onnx_options(bundle, x, repeats=args.repeats)
        save()
    if "decode" in args.phases:
        report["decode"] = measure_decode(bundle, upload, rounds=3 * args.repeats)
        save()
    if "precision" in args.phases:
        report["precision"] = measure_precision(bundle, upload, repeats=args.repeats, top_k=args.top_k,
                                                device=args.device)
        save()
    if "peer" in args.phases:
        report["peer"] = measure_peer(bundle, x, repeats=max(3, args.repeats // 2 + 1), top_k=args.top_k,
                                      threads=args.threads, device=args.device)
        save()
    if "service" in args.phases:
        report["service"] = measure_service(bundle, upload, repeats=args.pairs, clients=args.clients,
                                            per_level=args.per_level,
                                            cold_starts=args.cold_starts, env=env, top_k=args.top_k,
                                            threads=args.threads, device=args.device)
        save()
    if "memory" in args.phases:
        small = resized_bundle(bundle, args.cache, short_side=args.memory_short_side)
        report["memory"] = measure_memory(small, upload, requests=args.memory_requests, env=env,
                                          every=max(1, args.memory_requests // 20))
        save()
    if "scaling" in args.phases:
        report["scaling"] = measure_scaling(bundle, pixels, sides=args.scaling, repeats=max(2, args.repeats // 2),
                                            threads=args.threads, device=args.device)
        save()
    if "int8" in args.phases:
        from training.quantize.command import Candidate

        candidates = [Candidate(*item.split(":", 1)) for item in args.int8_candidates]
        # Random weights have no hold-out or test split: calibrate on half the phantoms, gate on the others.
        half = max(1, len(records) // 2)
        measured = int8_bundle(bundle, args.cache, candidates=candidates, calibration=records[:half],
                               test=records[half:] or records)
        report["int8"] = {"measured": measure_int8(measured, x, repeats=args.repeats, threads=args.threads,
                                                   device=args.device)}
        trained = load_bundle(args.int8_trained) if args.int8_trained else demo_bundle(args.cache)
        trained = int8_bundle(trained, args.cache, candidates=[Candidate(m, r) for m in CALIBRATION_METHODS
                                                               for r in FLOAT_REGIONS], calibration=None, test=None)
        report["int8"]["trained"] = measure_int8(trained, network_input(trained, upload), repeats=args.repeats,
                                                 threads=args.threads, device=args.device)
        save()
    if "batch" in args.phases:
        report["batch"] = measure_batch(bundle, x, sizes=args.batch_sizes, repeats=args.repeats, threads=args.threads,
                                        device=args.device)
        save()
    print(f"\nwrote {out_file}")
    if args.plots:
        from perf_plots import write_plots

        for path in write_plots(report, args.out):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
