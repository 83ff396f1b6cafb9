"""The whole training pipeline: manifest → patches → fine-tuned ResNet → FCN → ranked units → bundle."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from deepminer import __version__
from deepminer.bundle import (
    CONCEPT_LABELS_FILE,
    HEAD_FILE,
    ONNX_FILE,
    RANKINGS_FILE,
    WEIGHTS_FILE,
    finalise_bundle,
    load_bundle,
)
from deepminer.fcn import build_classifier, num_units, select_device, to_fcn
from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD
from training.concepts import automatic_labels
from training.config import TrainConfig
from training.data import cut_patches
from training.evaluate import one_vs_rest_metrics, plot_roc, predict
from training.export import export_onnx
from training.localisation import cam_peak_in_lesion
from training.manifest import read_manifest
from training.patches import CLASSES
from training.ranking import fcn_maps, rank_units
from training.split import PARTS, split_by_case
from training.train import fine_tune

log = logging.getLogger(__name__)


def build_bundle(
    manifest: Path,
    out_dir: Path,
    config: TrainConfig,
    *,
    auto_label: bool = False,
    progress: bool = True,
) -> Path:
    """Train on ``manifest`` and write a verified bundle to ``out_dir``; returns its path.

    The bundle is assembled in a sibling temporary directory and moved into
    place at the end, so ``out_dir`` never holds half a bundle. ``auto_label``
    adds automatic unit labels from the manifest's concept masks.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    records = read_manifest(Path(manifest))
    parts = split_by_case(records, seed=config.seed, fractions=config.split_fractions)
    log.info("split by case: %s", {p: len(parts[p]) for p in PARTS})
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    patches = {
        part: cut_patches(
            parts[part], rule=config.patch_rule, patch_size=config.patch_size, desc=f"{part} patches", progress=progress
        )
        for part in PARTS
    }
    log.info("patches: %s", {p: patches[p].class_counts() for p in PARTS})

    model = build_classifier(depth=config.depth, num_classes=len(CLASSES), imagenet_weights=config.imagenet_weights)
    result = fine_tune(model, patches["train"], patches["holdout"], config, device=device, progress=progress)
    model = result.model

    test = patches["test"]
    test_probs = predict(model, test.pixels, mean=mean, std=std, batch_size=config.eval_batch_size, device=device)
    test_metrics = one_vs_rest_metrics(test.labels, test_probs, CLASSES)
    log.info("test AUC %s, pAUC@TPR0.8 %s", test_metrics["auc"], test_metrics["pauc_tpr0.8"])

    fcn = to_fcn(model).eval().to(device)
    short_side = config.input_short_side
    map_args = dict(short_side=short_side, mean=mean, std=std, device=device, progress=progress)
    ranking = rank_units(
        fcn,
        parts["holdout"],
        classes=CLASSES,
        top_per_image=config.top_per_image,
        top_per_class=config.top_per_class,
        threshold_quantile=config.threshold_quantile,
        **map_args,
    )
    for c, name in enumerate(CLASSES):
        log.info("class %s: %d ranked units, coverage %.2f%%", name, len(ranking.ranked(c)), 100 * ranking.coverage(c))
    weight = fcn.head.weight.detach()[:, :, 0, 0].float().cpu().numpy()
    bias = fcn.head.bias.detach().float().cpu().numpy()
    localisation = cam_peak_in_lesion(fcn_maps(fcn, parts["test"], desc="CAM check", **map_args), weight, list(CLASSES))
    log.info("CAM peak in lesion: %s", localisation)

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "plots").mkdir()
    model_cpu = model.cpu()
    torch.save(model_cpu.state_dict(), staging / WEIGHTS_FILE)
    np.savez(staging / HEAD_FILE, weight=weight, bias=bias)
    export_onnx(to_fcn(model_cpu).eval(), staging / ONNX_FILE, example_shape=(short_side, short_side + short_side // 2))
    (staging / RANKINGS_FILE).write_text(json.dumps(ranking.to_json(), indent=1) + "\n")
    plot_roc(test.labels, test_probs, CLASSES, staging / "plots" / "roc.png", title=f"{config.name}: test patches")
    if auto_label:
        fcn = to_fcn(model_cpu).eval()
        labels = automatic_labels(
            fcn_maps(fcn, parts["holdout"], desc="auto labels", **{**map_args, "device": torch.device("cpu")}),
            ranking.ranked_union(),
            ranking.thresholds,
        )
        (staging / CONCEPT_LABELS_FILE).write_text(json.dumps(labels, indent=1) + "\n")
        log.info("automatic labels for %d of %d ranked units", len(labels), len(ranking.ranked_union()))

    meta: dict[str, Any] = {
        "name": config.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "architecture": f"resnet{config.depth}",
            "depth": config.depth,
            "classes": list(CLASSES),
            "layer": "layer4",
            "num_units": num_units(model_cpu),
            "stride": 32,
            "onnx": {"input": "image", "outputs": ["logits", "features"], "layout": "NCHW float32"},
        },
        "preprocessing": {
            "grayscale": "replicated to 3 channels",
            "intensity": "16-bit / 65535, 8-bit / 255, into [0, 1]",
            "mean": list(mean),
            "std": list(std),
            "patch_size": config.patch_size,
            "input_short_side": short_side,
            "resize": "Pillow bilinear (antialiased)",
        },
        "patch_rule": config.patch_rule.to_dict(),
        "split": {
            "seed": config.seed,
            "by": "case_id",
            "fractions": list(config.split_fractions),
            "cases": {p: len({r.case_id for r in parts[p]}) for p in PARTS},
            "images": {p: len(parts[p]) for p in PARTS},
            "patches": {p: patches[p].class_counts() for p in PARTS},
        },
        "training": {
            "config": config.to_dict(),
            "best_epoch": result.best_epoch,
            "selection": "best hold-out mean one-vs-rest AUC",
            "history": result.history,
            "device": str(device),
            "seconds": round(time.perf_counter() - started, 1),
        },
        "metrics": {"test_patches": test_metrics, "cam_localisation": localisation},
        "ranking": {
            "file": RANKINGS_FILE,
            "top_per_image": config.top_per_image,
            "top_per_class": config.top_per_class,
            "coverage": {name: ranking.coverage(c) for c, name in enumerate(CLASSES)},
        },
        "data": {"manifest": str(Path(manifest).resolve()), "images": len(records)},
        "software": {
            "deepminer": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }
    finalise_bundle(staging, meta)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    bundle = load_bundle(out_dir)
    log.info("bundle %s written to %s in %.0f s", bundle.id, out_dir, time.perf_counter() - started)
    return out_dir
