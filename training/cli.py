"""``python -m training``: make phantoms, train a bundle, or build the demo bundle in one go."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from deepminer.bundle import PATCHES_PER_UNIT
from deepminer.scoring import SCORE_RULES
from training.config import DEMO_CONFIG, LR_SCHEDULES, RECIPES, TrainConfig
from training.config_file import RunFile, read_run_file
from training.phantoms.config import DEMO_PHANTOMS, MAX_VIEWS_PER_CASE, PhantomConfig

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
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=defaults.lr_schedule,
                   help="'step' (the decay above) or 'cosine' (from --lr to 0, every step) (default: %(default)s)")
    g.add_argument("--samples-per-epoch", type=int, default=defaults.samples_per_epoch,
                   help="class-balanced patches drawn per epoch (default: %(default)s = all training patches)")
    g.add_argument("--seed", type=int, default=defaults.seed, help="split and training seed (default: %(default)s)")
    g.add_argument("--imagenet-weights", type=Path, default=defaults.imagenet_weights,
                   help="local torchvision ImageNet state-dict file to start from (never downloaded)")
    g.add_argument("--device", default=defaults.device, choices=["auto", "cpu", "cuda"], help="(default: %(default)s)")
    g.add_argument("--aux-features", type=_names, default=defaults.aux_features, metavar="NAME[,NAME...]",
                   help="auxiliary per-case features to train with, from the manifest's aux:<name> columns "
                   "(default: %(default)s = none)")
    g.add_argument("--suspicious-patches", type=_positive_int, default=defaults.suspicious_patches, metavar="N",
                   help="hold-out cells kept per lesion class for the suspicious-patches list (default: %(default)s)")
    g.add_argument("--score-rule", choices=SCORE_RULES, default=defaults.score_rule,
                   help="image-level score rule the bundle records (deepminer/scoring.py) (default: %(default)s)")


def _add_top_patches(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument("--top-patches", type=_positive_int, default=default, metavar="N",
                   help="hold-out patches shown per ranked unit in the expert survey (default: %(default)s)")


def _add_int8_flag(p: argparse.ArgumentParser, default: bool) -> None:
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=default,
                   help="also write the int8 FCN, gated against fp32, as `quantize` does with every candidate")


def _add_int8_options(p: argparse.ArgumentParser) -> None:
    from training.quantize import CALIBRATION_METHODS, FLOAT_REGIONS

    g = p.add_argument_group("int8 candidates (each calibration method x each float region is tried)")
    g.add_argument("--calibration", nargs="+", choices=list(CALIBRATION_METHODS), default=list(CALIBRATION_METHODS),
                   help="calibration methods (default: all)")
    g.add_argument("--float", nargs="+", dest="float_regions", choices=list(FLOAT_REGIONS), default=list(FLOAT_REGIONS),
                   help="what stays in float: nothing, the head, layer4's last block and the head, or layer4 and the "
                   "head (default: all four)")
    g.add_argument("--calibration-images", type=_positive_int, default=None, metavar="N",
                   help="calibrate on the first N hold-out mammograms only (default: all)")
    g.add_argument("--repeats", type=_positive_int, default=3, help="timed rounds per candidate (default: %(default)s)")


def _int8_candidates(args: argparse.Namespace) -> list[Any]:
    from training.quantize.command import Candidate

    return [Candidate(method, region) for method in args.calibration for region in args.float_regions]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _config_from(args: argparse.Namespace, defaults: TrainConfig) -> TrainConfig:
    return defaults.replace(
        name=args.name,
        depth=args.depth,
        patch_size=args.patch_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay_epoch=args.lr_decay_epoch,
        lr_schedule=args.lr_schedule,
        samples_per_epoch=args.samples_per_epoch,
        seed=args.seed,
        imagenet_weights=args.imagenet_weights,
        device=args.device,
        aux_features=args.aux_features,
        suspicious_patches=args.suspicious_patches,
        score_rule=args.score_rule,
    )


def build_parser(run: RunFile | None = None, recipe: TrainConfig | None = None) -> argparse.ArgumentParser:
    """The CLI; ``run`` (a ``build --config`` run file) supplies the ``build`` defaults that flags override."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train DeepMiner model bundles: patches, fine-tuning, evaluation, FCN, unit ranking.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("phantoms", help="generate phantom mammograms with lesion masks and a manifest CSV")
    p.add_argument("out", type=Path, help="output folder (images/, masks/, manifest.csv)")
    p.add_argument("--cases", type=int, default=25, help="number of cases (default: %(default)s)")
    p.add_argument("--views", type=int, default=PhantomConfig.views_per_case,
                   help=f"views per case, 1 to {MAX_VIEWS_PER_CASE}: CC and MLO of the breast with the findings first, "
                   "then of the other breast (default: %(default)s)")
    p.add_argument("--height", type=int, default=1000, help="image height in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--normal-fraction", type=float, default=PhantomConfig.normal_fraction,
                   help="share of cases without a finding (default: %(default)s)")
    p.add_argument("--max-findings", type=int, default=PhantomConfig.max_findings,
                   help="most findings per abnormal case (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")

    p = sub.add_parser("build", help="train on a manifest CSV and write a model bundle",
                       description="Also runs under `torchrun --nproc-per-node N -m training build ...` "
                       "(DistributedDataParallel; see training/distributed.py).")
    from_file = run.build if run else {}
    p.add_argument("--config", type=Path, metavar="RUN_TOML",
                   help="TOML run file (keys in training/config_file.py); flags given here override its values")
    p.add_argument("--manifest", type=Path, required="manifest" not in from_file, default=from_file.get("manifest"),
                   help="manifest CSV (see training/manifest.py)")
    p.add_argument("--out", type=Path, required="out" not in from_file, default=from_file.get("out"),
                   help="bundle directory to write")
    p.add_argument("--auto-labels", action=argparse.BooleanOptionalAction, default=from_file.get("auto_labels", False),
                   help="label ranked units automatically from the manifest's concept masks")
    p.add_argument("--checkpoint-dir", type=Path, default=from_file.get("checkpoint_dir"),
                   help="write a checkpoint (model, optimiser, RNG states, history) here after every epoch")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=from_file.get("resume", False),
                   help="continue from the checkpoint in --checkpoint-dir when it holds one")
    _add_top_patches(p, from_file.get("top_patches", PATCHES_PER_UNIT))
    _add_int8_flag(p, False)
    p.add_argument("--recipe", choices=sorted(RECIPES), default=(recipe or TrainConfig()).recipe,
                   help="the defaults every other option starts from: 'paper' is exactly the paper and its reference "
                   "code; 'demo' the small phantom demo's deviations (training/config.py) (default: %(default)s)")
    p.add_argument("--from-scratch", action="store_true",
                   help="allow a ResNet deeper than 18 to train from random weights (without --imagenet-weights)")
    _add_train_options(p, run.config if run else recipe or TrainConfig())

    p = sub.add_parser("demo", help="phantoms + a small ResNet-18 bundle with automatic labels (a few minutes on CPU)")
    p.add_argument("--out", type=Path, default=Path("bundles/demo"), help="bundle directory (default: %(default)s)")
    p.add_argument("--data", type=Path, default=Path("data/phantoms"), help="phantom folder (default: %(default)s)")
    p.add_argument("--cases", type=int, default=DEMO_PHANTOMS.n_cases,
                   help=f"phantom cases, {DEMO_PHANTOMS.views_per_case} views each (default: %(default)s)")
    p.add_argument("--height", type=int, default=DEMO_PHANTOMS.height,
                   help="phantom height in pixels (default: %(default)s)")
    _add_top_patches(p, PATCHES_PER_UNIT)
    _add_int8_flag(p, False)
    _add_train_options(p, DEMO_CONFIG)

    p = sub.add_parser("export", help="explanation benchmark: blinded CSV + answer key for the bundle's test mammograms",
                       description="Write blinded.csv (Case #, DeepMiner Explanation, empty C/B column) and "
                       "answer_key.csv for the test-split benign and malignant mammograms; see docs/benchmark.md.")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    p.add_argument("--manifest", type=Path, required=True, help="the manifest CSV the bundle was built from")
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", type=Path, help="unit labels as CSV or JSON (python -m annotations export)")
    labels.add_argument("--db", help="unit-label store URL, e.g. sqlite:///./deepminer.db")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the --per-class draw and the shuffling (default: %(default)s)")
    p.add_argument("--per-class", type=_positive_int, default=None, metavar="N",
                   help="draw N benign and N malignant test mammograms at random, as the paper did (165 each); "
                   "default: every one, as unbalanced as the test split")
    p.add_argument("--include-automatic", action="store_true",
                   help="let automatic unit labels explain cases too (default: expert labels only)")
    p.add_argument("--top", type=int, default=3, help="annotated units per explanation (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: %(default)s)")

    p = sub.add_parser("score", help="score an expert's filled-in benchmark file against the answer key")
    p.add_argument("--responses", type=Path, required=True, help="the filled-in blinded.csv")
    p.add_argument("--key", type=Path, required=True, help="answer_key.csv from `export`")
    p.add_argument("--out", type=Path, help="also save the figures as JSON here")
    p.add_argument("--allow-blank", action="store_true",
                   help="exclude (and report) blank answers and missing cases instead of refusing the file")

    p = sub.add_parser("quality", help="explanation-quality report of a bundle on mammograms with lesion masks",
                       description="Image-level AUC, pointing game, concept naming and background figures, "
                       "computed as the service explains (training/quality/). Writes quality.json, quality.md "
                       "and a figure of the worst cases.")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    p.add_argument("--manifest", type=Path, required=True, help="manifest CSV with lesion masks")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: quality/ next to the manifest)")
    p.add_argument("--part", choices=["test", "all"], default=None,
                   help="the bundle's test split, or every image (default: test for the manifest the bundle was "
                   "built from, all for any other)")
    p.add_argument("--labels", type=Path, default=None,
                   help="unit labels as CSV or JSON (python -m annotations export); default: the bundle's "
                   "automatic labels")
    p.add_argument("--bars", action="store_true", help="also check the demo's quality bars (exit 1 if one fails)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="(default: %(default)s)")
    p.add_argument("--score-rule", choices=SCORE_RULES, default=None,
                   help="score images under this rule instead of the bundle's (deepminer/scoring.py), to compare rules")

    p = sub.add_parser("quantize", help="add an int8 FCN (fcn.int8.onnx) to a bundle, gated against fp32",
                       description="Quantize the bundle's FCN with ONNX Runtime (QDQ, per-channel weights), calibrated "
                       "on its hold-out mammograms, once per calibration method and float region asked for; gate each "
                       "against fp32 on its test mammograms and time it; write the fastest whose gates hold "
                       "(training/quantize/). The bundle's hash changes.")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle directory (rewritten in place)")
    p.add_argument("--manifest", type=Path, default=None,
                   help="the manifest the bundle was built from, if it moved (default: the path meta.json records)")
    _add_int8_options(p)

    p = sub.add_parser("ingest-cbis", help="write the manifest of a CBIS-DDSM download (CSVs + DICOM tree)",
                       description="Rules and layout: training/ingest/cbis_ddsm.py and docs/data.md.")
    p.add_argument("--root", type=Path, required=True,
                   help="folder holding the *case_description*.csv files and the CBIS-DDSM/ DICOM tree")
    p.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    p.add_argument("--normals", type=Path, default=None,
                   help="manifest of normal images (one empty-findings row per image) to merge into the output")

    p = sub.add_parser("verify", help="check a bundle's files against its meta.json and print a summary")
    p.add_argument("bundle", type=Path)
    return parser


def _int8_summary(int8: dict[str, Any]) -> str:
    """The trials and the chosen int8 file's gates as plain text."""
    q = int8["quantization"]
    lines = [f"{'calibration':<12} {'float':<11} {'x fp32':>7}  gates  " + "  ".join(int8["gates"]["checks"])]
    for t in int8["trials"]:
        values = "  ".join("n/a" if v is None else f"{v:.4g}" for v in t["checks"].values())
        lines.append(f"{t['calibration']:<12} {t['float_region']:<11} {t['speedup_vs_fp32']:>7.2f}  "
                     f"{'held' if t['gates_pass'] else 'FAIL':<5}  {values}")
    verdict = "held" if int8["gates"]["pass"] else "FAILED (the service refuses it unless told otherwise)"
    lines.append(f"chose {q['calibration']['method']} calibration with {q['float_region']} in float: "
                 f"{int8['speed']['speedup_vs_fp32']:.2f} x fp32, gates {verdict}")
    return "\n".join(lines)


def _run_file(argv: list[str]) -> tuple[RunFile | None, TrainConfig]:
    """The recipe and run file of a ``build`` command line, read first so that their values become defaults.

    Precedence: flags, then the run file, then the recipe.
    """
    command = next((a for a in argv if not a.startswith("-")), None)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    pre.add_argument("--recipe", choices=sorted(RECIPES), default="paper")
    known, _ = pre.parse_known_args(argv)
    base = RECIPES[known.recipe] if command == "build" else TrainConfig()
    run = read_run_file(known.config, base=base) if command == "build" and known.config else None
    return run, base


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        run, recipe = _run_file(argv)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser(run, recipe).parse_args(argv)
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
            from training.phantoms import generate_phantoms

            manifest = generate_phantoms(
                args.out, config=PhantomConfig(n_cases=args.cases, views_per_case=args.views, height=args.height,
                                               seed=args.seed, normal_fraction=args.normal_fraction,
                                               max_findings=args.max_findings),
                workers=args.workers, progress=progress,
            )
            print(f"wrote {manifest}")
        elif args.command == "build":
            from training.distributed import distributed_run
            from training.pipeline import build_bundle

            config = _config_from(args, run.config if run else recipe)
            if config.depth > 18 and config.imagenet_weights is None and not args.from_scratch:
                raise ValueError(
                    f"ResNet-{config.depth} without --imagenet-weights would train from random weights, which the "
                    "paper never did; pass a local torchvision ImageNet state dict with --imagenet-weights FILE, "
                    "or --from-scratch to train from random weights anyway"
                )
            # Under torchrun every rank runs this; rank 0 alone logs, shows progress and writes.
            with distributed_run(config.device) as dist:
                out = build_bundle(args.manifest, args.out, config, auto_label=args.auto_labels,
                                   progress=progress and dist.is_main, checkpoint_dir=args.checkpoint_dir,
                                   resume=args.resume, top_patches=args.top_patches, int8=args.int8)
            if dist.is_main:
                print(f"wrote bundle {out}")
        elif args.command == "demo":
            from training.distributed import launched_by_torchrun
            from training.phantoms import generate_phantoms, written_config
            from training.pipeline import build_bundle

            if launched_by_torchrun():
                raise ValueError("demo runs in one process; under torchrun use `-m training build`")
            wanted = dataclasses.replace(DEMO_PHANTOMS, n_cases=args.cases, height=args.height, seed=args.seed)
            manifest = args.data / "manifest.csv"
            if not manifest.is_file():
                manifest = generate_phantoms(args.data, config=wanted, progress=progress)
            elif (found := written_config(args.data)) != wanted:
                held = "phantoms of unknown settings (no phantoms.json)" if found is None else f"{found}"
                raise ValueError(f"{args.data} holds {held}, not the demo's {wanted}: delete {args.data} to "
                                 "generate the demo's phantoms there, or pass --data with another folder")
            out = build_bundle(manifest, args.out, _config_from(args, DEMO_CONFIG), auto_label=True, progress=progress,
                               top_patches=args.top_patches, int8=args.int8)
            print(f"wrote demo bundle {out} in {time.perf_counter() - started:.0f} s")
        elif args.command == "export":
            from training.benchmark import export_benchmark

            result = export_benchmark(args.bundle, args.manifest, args.out, labels_file=args.labels, db_url=args.db,
                                      seed=args.seed, top=args.top, per_class=args.per_class,
                                      include_automatic=args.include_automatic, device=args.device, progress=progress)
            drawn = (f"drawn at random (seed {args.seed}) from {result.available['malignant']} malignant and "
                     f"{result.available['benign']} benign" if args.per_class else "all the test split's")
            balance = "" if result.malignant == result.benign else "; unbalanced: `score` tests against the majority rate"
            print(f"wrote {result.blinded} and {result.key}: {result.cases} mammograms "
                  f"({result.malignant} malignant, {result.benign} benign; {drawn}){balance}; "
                  f"{result.explaining_units} labelled ranked malignant units can explain them "
                  f"({result.annotated_units} labelled units in all, "
                  f"{'expert and automatic' if args.include_automatic else 'expert'} labels)")
        elif args.command == "score":
            from training.benchmark import format_score, score_responses, write_score

            score = score_responses(args.responses, args.key, allow_blank=args.allow_blank)
            print(format_score(score))
            if args.out:
                write_score(score, args.out)
        elif args.command == "quality":
            from training.quality import bundle_quality

            report, paths = bundle_quality(args.bundle, args.manifest, args.out, part=args.part,
                                           labels_file=args.labels, device=args.device, bars=args.bars,
                                           progress=progress, score_rule=args.score_rule)
            print(paths[1].read_text())
            print("wrote " + ", ".join(str(p) for p in paths))
            if args.bars and not all(b["pass"] for b in report.figures["bars"].values()):
                return 1
        elif args.command == "quantize":
            from training.quantize.command import quantize_bundle

            result = quantize_bundle(args.bundle, manifest=args.manifest, candidates=_int8_candidates(args),
                                     max_calibration_images=args.calibration_images, repeats=args.repeats,
                                     progress=progress)
            print(_int8_summary(result.int8))
            print(f"wrote {result.bundle}/{result.int8['file']}; the bundle's hash changed from "
                  f"{result.old_hash[:12]} to {result.new_hash[:12]}; labels made before keep the old hash")
            if not result.int8["gates"]["pass"]:
                return 1
        elif args.command == "ingest-cbis":
            from training.ingest import ingest_cbis_ddsm

            report = ingest_cbis_ddsm(args.root, args.out, normals=args.normals, progress=progress)
            print(f"wrote {report.summary()}")
            for reason in report.skipped[:10]:
                print(f"  skipped {reason}")
            if len(report.skipped) > 10:
                print(f"  ... and {len(report.skipped) - 10} more (all are logged as warnings)")
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
