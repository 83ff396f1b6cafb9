"""``python -m training quantize``: try int8 variants of a bundle's FCN, gate each against fp32, keep the best.

Every candidate (a calibration method × a float region, :mod:`training.quantize.int8`)
is calibrated on the bundle's hold-out mammograms, gated against the fp32 graph
on its test mammograms (:mod:`training.quantize.gates`) and timed against it,
round-robin, on one test mammogram. The fastest candidate whose gates all hold
is written to the bundle as ``fcn.int8.onnx``; when none holds, the one with
the fewest failed gates (then the fastest) is, and ``meta.json`` says it
failed, so the service refuses it unless told otherwise. ``meta.json``
``int8`` records how the file was made, its gates, and every trial.
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
from onnxruntime.quantization import quantize_static

from deepminer.bundle import (
    CONCEPT_LABELS_FILE,
    INT8_ONNX_FILE,
    META_FILE,
    ONNX_FILE,
    Bundle,
    finalise_bundle,
    load_bundle,
)
from training.manifest import ImageRecord, read_manifest
from training.quality import labels_by_unit
from training.quantize.cpu import cpu_info
from training.quantize.gates import compare
from training.quantize.int8 import float_nodes, quantize_fcn
from training.quantize.maps import calibration_reader, feeds, onnx_maps, session
from training.quantize.names import CALIBRATION_METHODS, FLOAT_REGIONS
from training.split import split_by_case

log = logging.getLogger(__name__)

CACHES_CALIBRATION = "calibration_cache_path" in inspect.signature(quantize_static).parameters
"""ONNX Runtime 1.32 and later keep calibrated ranges in a file, so trials that differ only in what stays
in float calibrate once; older versions calibrate every trial."""


@dataclass(frozen=True)
class Candidate:
    """One way to quantize: the calibration method and the region that stays in float."""

    method: str
    region: str

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}")
        if self.region not in FLOAT_REGIONS:
            raise ValueError(f"float region must be one of {', '.join(FLOAT_REGIONS)}, got {self.region!r}")

    @property
    def name(self) -> str:
        return f"{self.method}, float: {self.region}"


@dataclass
class Trial:
    """A candidate's file, its float nodes, gates and timings."""

    candidate: Candidate
    path: Path
    float_nodes: list[str]
    gates: dict[str, Any]
    seconds: list[float] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.gates["checks"].values() if c["pass"] is False)

    def to_json(self, fp32_seconds: float) -> dict[str, Any]:
        median = statistics.median(self.seconds)
        return {
            "calibration": self.candidate.method,
            "float_region": self.candidate.region,
            "float_nodes": len(self.float_nodes),
            "median_s": median,
            "speedup_vs_fp32": fp32_seconds / median,
            "gates_pass": self.gates["pass"],
            "checks": {name: c["value"] for name, c in self.gates["checks"].items()},
        }


@dataclass(frozen=True)
class QuantizeResult:
    """What ``quantize`` wrote: the bundle, its hash before and after, and the ``meta.json`` ``int8`` section."""

    bundle: Path
    old_hash: str
    new_hash: str
    int8: dict[str, Any]


def bundle_parts(bundle: Bundle, manifest: Path | None) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """The bundle's hold-out and test mammograms: its manifest (or ``manifest``, e.g. moved) split as it was built."""
    path = manifest or bundle.meta.get("data", {}).get("manifest")
    split = bundle.meta.get("split")
    if path is None or split is None:
        raise ValueError(f"bundle {bundle.root} records no manifest and split; give the calibration and test images")
    parts = split_by_case(read_manifest(Path(path)), seed=int(split["seed"]), fractions=tuple(split["fractions"]))
    return parts["holdout"], parts["test"]


def quantize_bundle(
    bundle_dir: Path,
    *,
    manifest: Path | None = None,
    calibration: Sequence[ImageRecord] | None = None,
    test: Sequence[ImageRecord] | None = None,
    candidates: Sequence[Candidate] | None = None,
    max_calibration_images: int | None = None,
    repeats: int = 3,
    threads: int = 0,
    progress: bool = True,
) -> QuantizeResult:
    """Add ``fcn.int8.onnx`` to the bundle at ``bundle_dir`` (replacing one there); see the module docstring.

    ``calibration`` and ``test`` default to the bundle's hold-out and test mammograms (:func:`bundle_parts`);
    ``candidates`` to every calibration method × float region. ``max_calibration_images``: calibrate on
    the first N hold-out mammograms only. ``repeats``: timed rounds per candidate. The bundle is rewritten
    in a sibling directory and swapped in, and its hash changes: ``meta.json`` lists the new file.
    """
    bundle = load_bundle(bundle_dir)
    source = "the bundle's hold-out mammograms" if calibration is None else "mammograms the caller chose"
    if calibration is None or test is None:
        holdout, test_part = bundle_parts(bundle, manifest)
        calibration = holdout if calibration is None else calibration
        test = test_part if test is None else test
    calibration = list(calibration)[:max_calibration_images]
    if not calibration or not test:
        raise ValueError(f"quantize needs calibration and test mammograms, got {len(calibration)} and {len(test)}")
    candidates = list(candidates or [Candidate(m, r) for m in CALIBRATION_METHODS for r in FLOAT_REGIONS])
    depth = int(bundle.meta["model"]["depth"])
    weight, _ = bundle.head
    rows = json.loads(bundle.path(CONCEPT_LABELS_FILE).read_text()) if bundle.has(CONCEPT_LABELS_FILE) else []
    labels = labels_by_unit(rows)  # the quality report's concept naming needs them; the gates do not
    fp32_path = bundle.path(ONNX_FILE)
    reference = onnx_maps(fp32_path, test, bundle=bundle, threads=threads, desc="fp32 maps", progress=progress)
    model = onnx.load(str(fp32_path))
    dataset = {"part": "test", "images": len(test), "bundle": bundle.id}
    with tempfile.TemporaryDirectory(prefix="deepminer-int8-") as tmp:
        trials = []
        for n, candidate in enumerate(candidates):
            started = time.perf_counter()
            path = Path(tmp) / f"candidate-{n}.onnx"
            keep = float_nodes(model, candidate.region, depth=depth)
            cache = Path(tmp) / f"ranges-{candidate.method}.json" if CACHES_CALIBRATION else None
            quantize_fcn(fp32_path, path, calibration=calibration_reader(calibration, bundle),
                         method=candidate.method, keep_float=keep, cache=cache)
            maps = onnx_maps(path, test, bundle=bundle, threads=threads, desc=candidate.name, progress=progress)
            gates = compare(maps, reference, weight=weight, classes=bundle.classes, labels=labels,
                            rankings=bundle.rankings, score_rule=bundle.score_rule, patch_cells=bundle.patch_cells,
                            dataset=dataset)
            trials.append(Trial(candidate, path, keep, gates))
            log.info("int8 %s: gates %s (%s) in %.0f s", candidate.name, "held" if gates["pass"] else "failed",
                     {k: c["value"] for k, c in gates["checks"].items()}, time.perf_counter() - started)
        fp32_seconds = time_round_robin(fp32_path, trials, feeds(test[0], bundle), repeats=repeats, threads=threads)
        chosen = min(trials, key=lambda t: (t.failed, statistics.median(t.seconds)))
        section = int8_meta(chosen, trials, fp32_seconds, calibration=calibration, source=source, bundle=bundle,
                            timed_on=test[0])
        new_hash = write_int8(bundle, chosen.path, section)
    log.info("int8: chose %s (%.2f x fp32; gates %s)", chosen.candidate.name,
             section["speed"]["speedup_vs_fp32"], "held" if chosen.gates["pass"] else "FAILED")
    return QuantizeResult(bundle=bundle.root, old_hash=bundle.hash, new_hash=new_hash, int8=section)


def time_round_robin(
    fp32_path: Path, trials: Sequence[Trial], inputs: dict[str, Any], *, repeats: int, threads: int
) -> list[float]:
    """Seconds per forward of the fp32 graph and of each trial's, one of each per round (after one warm-up round).

    Each trial's times go to ``trial.seconds``; the fp32 times are returned. Round-robin, so a shared
    machine's drift falls on every candidate alike.
    """
    sessions = [session(fp32_path, threads=threads)] + [session(t.path, threads=threads) for t in trials]
    samples: list[list[float]] = [[] for _ in sessions]
    for round_ in range(repeats + 1):
        for s, times in zip(sessions, samples):
            started = time.perf_counter()
            s.run(None, inputs)
            if round_:
                times.append(time.perf_counter() - started)
    for trial, times in zip(trials, samples[1:]):
        trial.seconds = times
    return samples[0]


def int8_meta(
    chosen: Trial,
    trials: Sequence[Trial],
    fp32_seconds: list[float],
    *,
    calibration: Sequence[ImageRecord],
    source: str,
    bundle: Bundle,
    timed_on: ImageRecord,
) -> dict[str, Any]:
    """``meta.json`` ``int8``: the chosen file, how it was quantized and calibrated, its gates, every trial."""
    fp32_median = statistics.median(fp32_seconds)
    median = statistics.median(chosen.seconds)
    return {
        "file": INT8_ONNX_FILE,
        "quantization": {
            "tool": "onnxruntime.quantization.quantize_static",
            "onnxruntime": ort.__version__,
            "format": "QDQ",
            "activations": "uint8, one scale and zero point per tensor",
            "weights": "int8, symmetric, one scale per output channel",
            "calibration": {
                "method": chosen.candidate.method,
                "images": len(calibration),
                "image_ids": [r.image_id for r in calibration],
                "source": f"{source}, whole, at the serving input size (short side {bundle.input_short_side} px)",
            },
            "float_region": chosen.candidate.region,
            "float_nodes": chosen.float_nodes,
        },
        "gates": chosen.gates,
        "speed": {
            "what": f"one forward of {timed_on.image_id} on ONNX Runtime's CPU provider, round-robin with fp32 and "
                    f"every trial, median of {len(fp32_seconds)}",
            "cpu": cpu_info(),
            "fp32_median_s": fp32_median,
            "int8_median_s": median,
            "speedup_vs_fp32": fp32_median / median,
        },
        "choice": "the fastest trial whose gates all held; if none held, the fewest failed gates, then the fastest",
        "trials": [t.to_json(fp32_median) for t in trials],
    }


def write_int8(bundle: Bundle, int8_file: Path, section: dict[str, Any]) -> str:
    """Copy the bundle into a sibling with ``int8_file`` and ``meta.json`` ``int8`` added, re-finalise, swap it in.

    Returns the new bundle hash.
    """
    root = bundle.root
    staging = root.with_name(root.name + ".int8.partial")
    retired = root.with_name(root.name + ".int8.old")
    for leftover in (staging, retired):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(root, staging)
    (staging / META_FILE).unlink()
    shutil.copyfile(int8_file, staging / INT8_ONNX_FILE)
    meta = {key: value for key, value in bundle.meta.items() if key not in ("files", "schema_version")}
    meta["int8"] = section
    new_hash = finalise_bundle(staging, meta)
    root.rename(retired)
    staging.rename(root)
    shutil.rmtree(retired)
    return new_hash
