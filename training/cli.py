"""``python -m training``: make phantoms, train a bundle, or build the demo bundle in one go."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from training.config import DEMO_CONFIG, TrainConfig

log = logging.getLogger("training")


def _add_train_options(p: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    g = p.add_argument_group("model and optimiser (defaults: the paper's settings)")
    g.add_argument("--name", default=defaults.name, help="bundle name (default: %(default)s)")
    g.add_argument("--depth", type=int, default=defaults.depth, choices=[18, 34, 50, 101, 152],
                   help="ResNet depth (default: %(default)s)")
    g.add_argument("--patch-size", type=int, default=defaults.patch_size,
                   help="patch side in pixels after resizing; whole images get a short side of 4x this (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=defaults.epochs, help="(default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=defaults.batch_size, help="(default: %(default)s)")
    g.add_argument("--lr", type=float, default=defaults.lr, help="SGD learning rate (default: %(default)s)")
    g.add_argument("--lr-decay-epoch", type=int, default=defaults.lr_decay_epoch,
                   help="0-based epoch from which the lr is multiplied by 0.1 (default: %(default)s)")
    g.add_argument("--samples-per-epoch", type=int, default=defaults.samples_per_epoch,
                   help="class-balanced patches drawn per epoch (default: %(default)s = all training patches)")
    g.add_argument("--seed", type=int, default=defaults.seed, help="split and training seed (default: %(default)s)")
    g.add_argument("--imagenet-weights", type=Path, default=None,
                   help="local torchvision ImageNet state-dict file to start from (never downloaded)")
    g.add_argument("--device", default=defaults.device, choices=["auto", "cpu", "cuda"], help="(default: %(default)s)")


def _config_from(args: argparse.Namespace, defaults: TrainConfig) -> TrainConfig:
    return defaults.replace(
        name=args.name,
        depth=args.depth,
        patch_size=args.patch_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay_epoch=args.lr_decay_epoch,
        samples_per_epoch=args.samples_per_epoch,
        seed=args.seed,
        imagenet_weights=args.imagenet_weights,
        device=args.device,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train DeepMiner model bundles: patches, fine-tuning, evaluation, FCN, unit ranking.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("phantoms", help="generate phantom mammograms with lesion masks and a manifest CSV")
    p.add_argument("out", type=Path, help="output folder (images/, masks/, manifest.csv)")
    p.add_argument("--cases", type=int, default=25, help="number of cases, 4 views each (default: %(default)s)")
    p.add_argument("--height", type=int, default=1000, help="image height in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")

    p = sub.add_parser("build", help="train on a manifest CSV and write a model bundle")
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV (see training/manifest.py)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--auto-labels", action="store_true",
                   help="label ranked units automatically from the manifest's concept masks")
    _add_train_options(p, TrainConfig())

    p = sub.add_parser("demo", help="phantoms + a small ResNet-18 bundle with automatic labels (a few minutes on CPU)")
    p.add_argument("--out", type=Path, default=Path("bundles/demo"), help="bundle directory (default: %(default)s)")
    p.add_argument("--data", type=Path, default=Path("data/phantoms"), help="phantom folder (default: %(default)s)")
    p.add_argument("--cases", type=int, default=30, help="phantom cases, 4 views each (default: %(default)s)")
    p.add_argument("--height", type=int, default=800, help="phantom height in pixels (default: %(default)s)")
    _add_train_options(p, DEMO_CONFIG)

    p = sub.add_parser("verify", help="check a bundle's files against its meta.json and print a summary")
    p.add_argument("bundle", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The ONNX exporter's optimiser passes log every rewrite at INFO.
    for noisy in ("onnx_ir", "onnxscript", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    progress = not args.quiet
    started = time.perf_counter()
    from deepminer.bundle import BundleError
    from training.manifest import ManifestError

    try:
        if args.command == "phantoms":
            from training.phantoms import PhantomConfig, generate_phantoms

            manifest = generate_phantoms(
                args.out, config=PhantomConfig(n_cases=args.cases, height=args.height, seed=args.seed),
                workers=args.workers, progress=progress,
            )
            print(f"wrote {manifest}")
        elif args.command == "build":
            from training.pipeline import build_bundle

            out = build_bundle(args.manifest, args.out, _config_from(args, TrainConfig()),
                               auto_label=args.auto_labels, progress=progress)
            print(f"wrote bundle {out}")
        elif args.command == "demo":
            from training.phantoms import PhantomConfig, generate_phantoms
            from training.pipeline import build_bundle

            manifest = args.data / "manifest.csv"
            if not manifest.is_file():
                manifest = generate_phantoms(
                    args.data, config=PhantomConfig(n_cases=args.cases, height=args.height, seed=args.seed),
                    progress=progress,
                )
            out = build_bundle(manifest, args.out, _config_from(args, DEMO_CONFIG), auto_label=True, progress=progress)
            print(f"wrote demo bundle {out} in {time.perf_counter() - started:.0f} s")
        elif args.command == "verify":
            from deepminer.bundle import load_bundle

            bundle = load_bundle(args.bundle)
            metrics = bundle.meta.get("metrics", {}).get("test_patches", {})
            print(f"{bundle.id}: {bundle.meta['model']['architecture']}, classes {bundle.classes}, "
                  f"{len(bundle.meta['files'])} files verified; test AUC {metrics.get('auc')}")
    except (ManifestError, BundleError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
