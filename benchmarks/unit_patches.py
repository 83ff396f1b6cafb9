"""What listing every unit's top patches costs: bundle bytes, build time, and the service's on-demand rendering.

    python benchmarks/unit_patches.py                          # ResNet-152-sized estimate, CPU
    python benchmarks/unit_patches.py --bundle bundles/demo    # also that bundle's table and rendering time
    python benchmarks/unit_patches.py --json out.json

1. **Bundle size.** ``units/top_patches.npz`` (:class:`deepminer.unit_patches.TopPatchTable`)
   for ``--units`` units × ``--patches-per-unit`` patches drawn from a hold-out
   set of ``--holdout-images`` mammograms × ``--patches-per-image`` patches,
   saved as the build saves it. Activations are random, so the compressed size
   is an upper bound: real ones compress no worse.
2. **Build time.** :func:`training.visualise.top_activating_patches` keeps a
   running top n and the exact 99th-percentile per unit; scoring every unit
   instead of the ranked 60 adds that bookkeeping. Measured with a stand-in
   body (average pooling to the layer4 grid and a 1×1 convolution to K
   units), so the figure is the bookkeeping alone: the network's forward pass
   is the same either way.
3. **Rendering** (with ``--bundle``): the service's
   :class:`service.units.patch_rendering.UnitPatchRenderer` on the bundle's
   ONNX model (CPU), for units outside the ranked set: first request (read
   images, crop, one batched forward pass, masks, PNGs) and a cached one.
4. **Forward pass of one render** for a bigger network (``--forward-depth``,
   ResNet-152 by default, random weights, torch on the CPU): the
   ``--patches-per-unit`` patches of ``--patch-size`` px in one batch, the part
   of a first request that grows with the network.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def table_size(*, units: int, per_unit: int, images: int, per_image: int, seed: int = 0) -> dict[str, Any]:
    """Bytes of a table like the build's, for a hold-out set of ``images`` × ``per_image`` patches."""
    from deepminer.unit_patches import TopPatchTable

    rng = np.random.default_rng(seed)
    holdout = images * per_image
    picks = np.stack([rng.choice(holdout, size=per_unit, replace=False) for _ in range(units)])
    used, patch = np.unique(picks, return_inverse=True)
    table = TopPatchTable(
        activation=-np.sort(-rng.gamma(2.0, 1.0, size=(units, per_unit)).astype(np.float32), axis=1),
        patch=patch.reshape(units, per_unit).astype(np.int32),
        threshold=rng.gamma(2.0, 1.0, size=units).astype(np.float32),
        threshold_source="patches",
        boxes=rng.integers(0, 4000, size=(len(used), 3)).astype(np.int32),
        image=(used // per_image).astype(np.int32),
        image_ids=tuple(f"Mass-Test_P_{i:05d}_LEFT_MLO" for i in range(images)),
        image_paths=tuple(f"CBIS-DDSM/Mass-Test_P_{i:05d}_LEFT_MLO/1.dcm" for i in range(images)),
        image_shapes=rng.integers(3000, 6000, size=(images, 2)).astype(np.int32),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "top_patches.npz"
        table.save(path)
        size = path.stat().st_size
    return {
        "units": units,
        "patches_per_unit": per_unit,
        "holdout_patches": holdout,
        "referenced_patches": len(used),
        "bytes": size,
        "mib": round(size / 2**20, 3),
    }


def bookkeeping_seconds(*, units: list[int], total_units: int, patches: int, patch_size: int, repeats: int) -> float:
    """Median seconds of :func:`top_activating_patches` over ``patches`` with a stand-in body of ``total_units``."""
    import torch
    from torch import nn

    from deepminer.grid import feature_grid_shape
    from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD
    from training.data import PatchSet
    from training.patches import Box
    from training.visualise import top_activating_patches

    torch.manual_seed(0)
    grid = feature_grid_shape(patch_size, patch_size)
    body = nn.Sequential(nn.AdaptiveAvgPool2d(grid), nn.Conv2d(3, total_units, 1), nn.ReLU())
    rng = np.random.default_rng(0)
    pixels = rng.random((patches, patch_size, patch_size), dtype=np.float32).astype(np.float16)
    data = PatchSet(
        pixels=pixels,
        labels=np.zeros(patches, dtype=np.int64),
        image_ids=tuple(f"img{i // 20}" for i in range(patches)),
        boxes=tuple(Box(0, 0, patch_size) for _ in range(patches)),
    )
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        top_activating_patches(
            body, data, units, mean=IMAGENET_MEAN, std=IMAGENET_STD, device=torch.device("cpu"), progress=False
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def rendering(bundle_dir: Path, *, units: int) -> dict[str, Any]:
    """First and cached render times of ``units`` unranked units of the bundle, with its ONNX model on the CPU."""
    from deepminer.bundle import load_bundle
    from service.backends import create_backend
    from service.inference import InferenceEngine
    from service.settings import Settings
    from service.units import UnitPatchRenderer

    bundle = load_bundle(bundle_dir)
    backend = create_backend(Settings(bundle=bundle_dir, backend="onnx", device="cpu"), bundle)
    try:
        renderer = UnitPatchRenderer(
            bundle=bundle, engine=InferenceEngine(bundle=bundle, backend=backend), images_dir=None, cache_units=units
        )
        index = bundle.unit_index or {}
        chosen = [k for k in range(bundle.num_units) if str(k) not in index][:units]
        first, cached, available = [], [], True
        for unit in chosen:
            started = time.perf_counter()
            rendered = renderer.render(unit)
            first.append(time.perf_counter() - started)
            available &= rendered.images_available
            started = time.perf_counter()
            renderer.render(unit)
            cached.append(time.perf_counter() - started)
        png_bytes = sum(len(v) for v in {id(v): v for v in rendered.pngs.values()}.values())  # contexts are shared
    finally:
        backend.close()
    return {
        "bundle": str(bundle_dir),
        "architecture": bundle.meta["model"]["architecture"],
        "patch_size": bundle.meta["preprocessing"]["patch_size"],
        "units_rendered": len(chosen),
        "images_available": available,
        "first_request_s_median": round(statistics.median(first), 4),
        "first_request_s_max": round(max(first), 4),
        "cached_s_median": round(statistics.median(cached), 6),
        "png_bytes_last_unit": png_bytes,
    }


def forward_seconds(*, depth: int, patches: int, patch_size: int, repeats: int) -> float:
    """Median seconds of the FCN body of a random-weights ResNet-``depth`` on ``patches`` patches, one batch."""
    import torch

    from deepminer.fcn import build_classifier, to_fcn

    body = to_fcn(build_classifier(depth=depth, num_classes=3)).eval().body
    x = torch.zeros((patches, 3, patch_size, patch_size))
    times = []
    with torch.inference_mode():
        body(x[:1])
        for _ in range(repeats):
            started = time.perf_counter()
            body(x)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=2048, help="layer4 units (ResNet-152: 2048)")
    parser.add_argument("--patches-per-unit", type=int, default=24)
    parser.add_argument("--holdout-images", type=int, default=310, help="about 10%% of CBIS-DDSM's 3103 mammograms")
    parser.add_argument("--patches-per-image", type=int, default=20)
    parser.add_argument("--ranked", type=int, default=60, help="units the build renders PNGs for")
    parser.add_argument("--build-patches", type=int, default=640, help="hold-out patches for the build timing")
    parser.add_argument("--patch-size", type=int, default=227)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bundle", type=Path, help="a bundle to measure its table and on-demand rendering")
    parser.add_argument("--render-units", type=int, default=8)
    parser.add_argument("--forward-depth", type=int, default=152, help="ResNet depth of the forward timing; 0: skip")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "table": table_size(
            units=args.units,
            per_unit=args.patches_per_unit,
            images=args.holdout_images,
            per_image=args.patches_per_image,
        ),
    }
    print(f"table for {args.units} units x {args.patches_per_unit}: {result['table']['mib']} MiB", flush=True)
    ranked = bookkeeping_seconds(
        units=list(range(args.ranked)),
        total_units=args.units,
        patches=args.build_patches,
        patch_size=args.patch_size,
        repeats=args.repeats,
    )
    every = bookkeeping_seconds(
        units=list(range(args.units)),
        total_units=args.units,
        patches=args.build_patches,
        patch_size=args.patch_size,
        repeats=args.repeats,
    )
    holdout = args.holdout_images * args.patches_per_image
    result["build"] = {
        "patches_timed": args.build_patches,
        "ranked_units_s": round(ranked, 3),
        "every_unit_s": round(every, 3),
        "extra_s_per_1000_patches": round(1000 * (every - ranked) / args.build_patches, 3),
        "extra_s_for_holdout": round(holdout * (every - ranked) / args.build_patches, 1),
        "holdout_patches": holdout,
    }
    print(f"build bookkeeping: {result['build']}", flush=True)
    if args.forward_depth:
        seconds = forward_seconds(
            depth=args.forward_depth, patches=args.patches_per_unit, patch_size=args.patch_size, repeats=args.repeats
        )
        result["forward"] = {
            "depth": args.forward_depth,
            "patches": args.patches_per_unit,
            "patch_size": args.patch_size,
            "threads": args.threads,
            "s": round(seconds, 3),
        }
        print(f"forward pass of one render: {result['forward']}", flush=True)
    if args.bundle is not None:
        from deepminer.unit_patches import TOP_PATCHES_FILE

        result["bundle_table_bytes"] = (args.bundle / TOP_PATCHES_FILE).stat().st_size
        result["rendering"] = rendering(args.bundle, units=args.render_units)
        print(f"bundle table {result['bundle_table_bytes']} bytes; rendering {result['rendering']}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
