"""Peak memory of the streamed unit ranking: it must not grow with the number of hold-out images.

    python benchmarks/ranking_memory.py                      # 50 and 500 phantom mammograms, 400 px high
    python benchmarks/ranking_memory.py --sizes 50 500 2000 --json

Phantom mammograms are generated once (offline, seeded). For each size a fresh
Python process builds a ResNet-18 FCN with random weights, runs
``training.ranking.rank_units`` over that many images on the CPU and reports
its peak resident set size (``ru_maxrss``), the RSS before ranking started, and
the size of the one part of the ranking that does grow by design: the exact
99th-percentile thresholds keep each unit's top 1% of activations
(``deepminer.formulas.TopQuantile``). Exit status 1 when the peak grows by more
than ``--max-growth-mib`` from the smallest to the largest size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
UNITS = 512  # ResNet-18 layer4


def _mib(kib: float) -> float:
    return round(kib / 1024, 1)


def _rss_kib() -> int:
    """Current resident set size from /proc (Linux); 0 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(manifest: Path, images: int, short_side: int) -> dict[str, float]:
    """Rank units over the first ``images`` images of ``manifest`` in this process; memory and time figures."""
    import torch

    from deepminer.fcn import build_classifier, to_fcn
    from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD
    from training.manifest import read_manifest
    from training.patches import CLASSES
    from training.ranking import activations_per_unit, rank_units

    records = read_manifest(manifest)[:images]
    if len(records) < images:
        raise SystemExit(f"{manifest} holds {len(records)} images, {images} were asked for")
    torch.manual_seed(0)
    fcn = to_fcn(build_classifier(depth=18, num_classes=len(CLASSES))).eval()
    per_unit = activations_per_unit(records, short_side=short_side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    ranking = rank_units(fcn, records, classes=CLASSES, short_side=short_side, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD, device=torch.device("cpu"), progress=False)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    assert ranking.num_images == images
    return {
        "images": images,
        "peak_rss_mib": _mib(peak),
        "peak_rss_before_ranking_mib": _mib(before),
        "rss_after_ranking_mib": _mib(_rss_kib()),
        "threshold_buffer_mib": round(math.ceil(0.01 * per_unit - 1e-9) * UNITS * 4 / 2**20, 2),
        "activations_per_unit": per_unit,
        "seconds": round(seconds, 1),
    }


def phantoms(folder: Path, images: int, height: int) -> Path:
    """A phantom manifest with at least ``images`` images (4 views a case), generated unless already there."""
    from training.manifest import read_manifest
    from training.phantoms import PhantomConfig, generate_phantoms

    manifest = folder / "manifest.csv"
    if manifest.is_file() and len(read_manifest(manifest)) >= images:
        return manifest
    config = PhantomConfig(n_cases=math.ceil(images / 4), height=height, seed=0)
    return generate_phantoms(folder, config=config, workers=min(4, os.cpu_count() or 1), progress=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[50, 500], help="numbers of images (default: 50 500)")
    p.add_argument("--height", type=int, default=400, help="phantom height in pixels (default: %(default)s)")
    p.add_argument("--short-side", type=int, default=256,
                   help="network input short side; 4 x patch size (default: %(default)s, the demo's)")
    p.add_argument("--data", type=Path, help="phantom folder to reuse (default: a temporary one)")
    p.add_argument("--json", type=Path, nargs="?", const=HERE / "ranking_memory.json",
                   help="also write the figures as JSON (default path: benchmarks/ranking_memory.json)")
    p.add_argument("--max-growth-mib", type=float, default=16.0,
                   help="fail when peak RSS grows more than this from the smallest to the largest size")
    p.add_argument("--child", nargs=2, metavar=("MANIFEST", "IMAGES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(measure(Path(args.child[0]), int(args.child[1]), args.short_side)))
        return 0

    sizes = sorted(set(args.sizes))
    with tempfile.TemporaryDirectory(prefix="ranking-memory-") as tmp:
        manifest = phantoms(args.data or Path(tmp) / "phantoms", sizes[-1], args.height)
        # One thread: the figures do not depend on the machine's core count.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        rows = []
        for n in sizes:
            cmd = [sys.executable, __file__, "--short-side", str(args.short_side), "--child", str(manifest), str(n)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(f"measured {n} images", file=sys.stderr)

    header = ("images", "peak RSS MiB", "before ranking MiB", "after ranking MiB", "threshold buffer MiB", "s")
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(str(v) for v in (r["images"], r["peak_rss_mib"], r["peak_rss_before_ranking_mib"],
                                           r["rss_after_ranking_mib"], r["threshold_buffer_mib"], r["seconds"])))
    growth = rows[-1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]
    print(f"peak RSS growth {rows[0]['images']} -> {rows[-1]['images']} images: {growth:+.1f} MiB "
          f"(limit {args.max_growth_mib:g} MiB)")
    if args.json:
        import torch

        report = {
            "command": "python benchmarks/ranking_memory.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "model": "resnet18 FCN, random weights, CPU, 1 thread",
            "phantom_height": args.height,
            "short_side": args.short_side,
            "rows": rows,
            "peak_rss_growth_mib": round(growth, 1),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
        }
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 1 if growth > args.max_growth_mib else 0


if __name__ == "__main__":
    sys.exit(main())
