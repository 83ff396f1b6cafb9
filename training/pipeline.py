"""The whole training pipeline: manifest → patches → fine-tuned ResNet → FCN → ranked units → bundle."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from deepminer import __version__
from deepminer.auxiliary import COLUMN_PREFIX, AuxFeature, fit_normalisation
from deepminer.bundle import (
    CONCEPT_LABELS_FILE,
    EMBEDDING_FILE,
    HEAD_FILE,
    ONNX_FILE,
    PATCHES_PER_UNIT,
    RANKINGS_FILE,
    UNITS_INDEX_FILE,
    WEIGHTS_FILE,
    finalise_bundle,
    load_bundle,
)
from deepminer.fcn import build_classifier, num_units, to_fcn
from deepminer.grid import patch_cells
from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD
from deepminer.scoring import SCORE_RULE_DEFINITIONS
from deepminer.unit_patches import TOP_PATCHES_FILE
from training.concepts import automatic_labels
from training.config import TrainConfig
from training.config_file import CONFIG_FILE, write_run_file
from training.data import cut_patches
from training.distributed import current_context
from training.embedding import UnitMaxima, unit_embedding
from training.evaluate import one_vs_rest_metrics, plot_roc
from training.export import AUX_INPUT_NAME, export_onnx
from training.manifest import ImageRecord, read_manifest
from training.patches import CLASSES
from training.plots import LEARNING_CURVES_FILE, plot_learning_curves
from training.quality import DEMO_BARS, QUALITY_DIR, QUALITY_JSON, assess, headline, labels_by_unit, write_report
from training.ranking import fcn_maps, rank_units
from training.split import PARTS, split_by_case
from training.suspicious import SuspiciousCells, write_suspicious_patches
from training.train import fine_tune, patch_probabilities
from training.visualise import top_activating_patches, write_top_patch_table, write_unit_visualisations

log = logging.getLogger(__name__)

VISUALISATION_THRESHOLD = "patches"
"""Unit masks in the visualisations are binarised at the hold-out patches' quantile (training/visualise.py says why)."""


def auxiliary_features(
    records: list[ImageRecord], train: list[ImageRecord], names: tuple[str, ...], *, manifest: Path
) -> tuple[AuxFeature, ...]:
    """The auxiliary features ``names`` with their normalisation fitted on the training cases (each case once).

    Raises ValueError naming the manifest when it has no ``aux:<name>`` column for one of them.
    """
    if not names:
        return ()
    available = sorted(records[0].aux) if records else []
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(
            f"{manifest}: aux_features {missing} have no {COLUMN_PREFIX}<name> column; the manifest has "
            f"{[COLUMN_PREFIX + n for n in available] or 'none'}"
        )
    cases = {r.case_id: r.aux for r in train}
    features = fit_normalisation(names, list(cases.values()))
    log.info("auxiliary features (train normalisation): %s", [f.to_json() for f in features])
    return features


def model_meta(depth: int, units: int) -> dict[str, Any]:
    """``meta.json`` ``model``: the ResNet, its classes and the FCN's ONNX interface."""
    return {
        "architecture": f"resnet{depth}",
        "depth": depth,
        "classes": list(CLASSES),
        "layer": "layer4",
        "num_units": units,
        "stride": 32,
        "onnx": {"input": "image", "outputs": ["logits", "features"], "layout": "NCHW float32"},
    }


def preprocessing_meta(
    mean: Sequence[float], std: Sequence[float], *, patch_size: int, short_side: int
) -> dict[str, Any]:
    """``meta.json`` ``preprocessing``: how an upload becomes the network input (:mod:`deepminer.imaging`)."""
    return {
        "grayscale": "replicated to 3 channels",
        "intensity": "PNG/TIFF/JPEG: 16-bit / 65535, 8-bit / 255; DICOM: modality LUT, VOI LUT or window, "
        "MONOCHROME1 inverted (deepminer/dicom.py); all into [0, 1]",
        "mean": list(mean),
        "std": list(std),
        "patch_size": patch_size,
        "input_short_side": short_side,
        "resize": "Pillow bilinear (antialiased)",
    }


def unit_visualisation_meta(
    *, top_patches: int, threshold_source: str, quantile: float, images_root: Path | None = None
) -> dict[str, Any]:
    """``meta.json`` ``unit_visualisation``: what ``units/index.json`` holds and how its masks were made.

    ``threshold_source`` and ``quantile`` are what the visualisations were
    made with (:func:`training.visualise.write_unit_visualisations`,
    :func:`training.visualise.top_activating_patches`). ``images_root``: the
    folder the table of every unit's top patches (``units/top_patches.npz``)
    stores hold-out image paths relative to; None for a bundle without it.
    """
    thresholds = {
        "patches": f"the unit's {quantile:g} quantile of its layer4 activations over every hold-out patch "
        "(units/index.json thresholds.patches); the ranking's whole-mammogram threshold (thresholds.ranking) is "
        "recorded beside it but not used, because on patches it leaves most masks empty",
        "ranking": "the ranking's whole-mammogram threshold (rankings.json unit_thresholds)",
    }
    if threshold_source not in thresholds:
        raise ValueError(f"threshold_source must be one of {sorted(thresholds)}, got {threshold_source!r}")
    table = {} if images_root is None else {
        "top_patches": {
            "file": TOP_PATCHES_FILE,
            "units": "every layer4 unit; PNGs above are rendered for the ranked units only",
            "images_root": str(images_root),
            "rendering": "the service renders other units' patches on demand from the hold-out images",
        }
    }
    return {
        "index": UNITS_INDEX_FILE,
        "patches_per_unit": top_patches,
        "source": "hold-out patches, ranked by the unit's max activation on the patch",
        "threshold_source": threshold_source,
        "mask": "the unit's layer4 map on the patch, bilinearly upsampled (deepminer.grid) and binarised at "
        f"{thresholds[threshold_source]}; outside dimmed",
        **table,
    }


def build_bundle(
    manifest: Path,
    out_dir: Path,
    config: TrainConfig,
    *,
    auto_label: bool = False,
    quality_report: bool = True,
    progress: bool = True,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    top_patches: int = PATCHES_PER_UNIT,
    int8: bool = False,
) -> Path:
    """Train on ``manifest`` and write a verified bundle to ``out_dir``; returns its path.

    The bundle is assembled in a sibling temporary directory and moved into
    place at the end, so ``out_dir`` never holds half a bundle. ``auto_label``
    adds automatic unit labels from the manifest's concept masks.
    ``quality_report``: score the explanations on the test split's lesion
    masks (:mod:`training.quality`) into ``quality/``.
    ``checkpoint_dir`` and ``resume``: see :func:`training.train.fine_tune`.
    ``top_patches``: hold-out patches visualised per ranked unit (at least 1).
    ``int8``: add the int8 FCN, gated against fp32 (:func:`training.quantize.command.quantize_bundle`).
    Under torchrun (:func:`training.distributed.init_distributed`) every rank
    trains; ranks other than 0 return after training and write nothing.
    """
    started = time.perf_counter()
    if isinstance(top_patches, bool) or not isinstance(top_patches, int) or top_patches < 1:
        raise ValueError(f"top_patches must be a whole number >= 1, got {top_patches!r}")
    out_dir = Path(out_dir)
    records = read_manifest(Path(manifest))
    parts = split_by_case(records, seed=config.seed, fractions=config.split_fractions)
    log.info("split by case: %s", {p: len(parts[p]) for p in PARTS})
    aux_features = auxiliary_features(records, parts["train"], config.aux_features, manifest=Path(manifest))
    dist = current_context(config.device)
    device = dist.device
    torch.manual_seed(config.seed)
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    patches = {
        part: cut_patches(
            parts[part], rule=config.patch_rule, patch_size=config.patch_size, desc=f"{part} patches",
            progress=progress, aux_features=config.aux_features, patch_context=config.patch_context,
            cell_weights=config.cell_weights,
        )
        for part in PARTS
    }
    log.info("patches: %s", {p: patches[p].class_counts() for p in PARTS})

    model = build_classifier(depth=config.depth, num_classes=len(CLASSES), imagenet_weights=config.imagenet_weights,
                             aux_features=aux_features)
    result = fine_tune(model, patches["train"], patches["holdout"], config, device=device, progress=progress,
                       dist=dist, checkpoint_dir=checkpoint_dir, resume=resume)
    model = result.model
    if not dist.is_main:
        return out_dir

    test = patches["test"]
    test_probs = patch_probabilities(model, test, batch_size=config.eval_batch_size, device=device)
    test_metrics = one_vs_rest_metrics(test.labels, test_probs, CLASSES)
    log.info("test AUC %s, pAUC (TPR >= 0.8) %s", test_metrics["auc"], test_metrics["pauc"])

    fcn = to_fcn(model).eval().to(device)
    short_side = config.input_short_side
    map_args = dict(short_side=short_side, mean=mean, std=std, device=device, progress=progress)
    # The ranking's pass over the hold-out mammograms also gives the unit embedding its maxima and finds their
    # most suspicious cells.
    suspicious = SuspiciousCells(CLASSES, n=config.suspicious_patches, patch_size=config.patch_size)
    maxima = UnitMaxima()
    ranking = rank_units(
        fcn,
        parts["holdout"],
        classes=CLASSES,
        top_per_image=config.top_per_image,
        top_per_class=config.top_per_class,
        threshold_quantile=config.threshold_quantile,
        watch=lambda maps: maxima.watch(suspicious.watch(maps)),
        **map_args,
    )
    for c, name in enumerate(CLASSES):
        log.info("class %s: %d ranked units, coverage %.2f%%", name, len(ranking.ranked(c)), 100 * ranking.coverage(c))
    weight = fcn.head.weight.detach()[:, :, 0, 0].float().cpu().numpy()
    bias = fcn.head.bias.detach().float().cpu().numpy()
    unit_patches = top_activating_patches(  # every unit: the table serves those outside the ranked set too
        fcn.body, patches["holdout"], range(weight.shape[1]), n=top_patches, q=config.threshold_quantile,
        mean=mean, std=std, device=device, batch_size=config.eval_batch_size, progress=progress,
    )
    embedding = unit_embedding(maxima.matrix(), ranking.ranked_union())
    log.info("unit embedding: explained variance ratio %s", embedding["explained_variance_ratio"])

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "plots").mkdir()
    model_cpu = model.cpu()
    torch.save(model_cpu.state_dict(), staging / WEIGHTS_FILE)
    head: dict[str, np.ndarray] = {"weight": weight, "bias": bias}
    if fcn.aux is not None:
        head["aux_weight"] = fcn.aux.weight.detach().float().cpu().numpy()
    np.savez(staging / HEAD_FILE, **head)  # type: ignore[arg-type]  # numpy's stub mistypes **kwds
    export_onnx(to_fcn(model_cpu).eval(), staging / ONNX_FILE, example_shape=(short_side, short_side + short_side // 2))
    (staging / RANKINGS_FILE).write_text(json.dumps(ranking.to_json(), indent=1) + "\n")
    plot_roc(test.labels, test_probs, CLASSES, staging / "plots" / "roc.png", title=f"{config.name}: test patches")
    plot_learning_curves(result.history, staging / LEARNING_CURVES_FILE, title=f"{config.name}: training",
                         best_epoch=result.best_epoch)
    write_run_file(staging / CONFIG_FILE, config,
                   build={"manifest": Path(manifest).resolve(), "auto_labels": auto_label, "top_patches": top_patches})
    write_unit_visualisations(staging, unit_patches.subset(ranking.ranked_union()), patches["holdout"],
                              parts["holdout"], ranking, threshold_source=VISUALISATION_THRESHOLD, progress=progress)
    write_top_patch_table(staging, unit_patches, patches["holdout"], parts["holdout"],
                          thresholds={"patches": unit_patches.patch_thresholds, "ranking": ranking.thresholds}[
                              VISUALISATION_THRESHOLD],
                          threshold_source=VISUALISATION_THRESHOLD, images_root=Path(manifest).resolve().parent)
    (staging / EMBEDDING_FILE).write_text(json.dumps(embedding, indent=1) + "\n")
    labels: list[dict[str, Any]] = []
    if auto_label:
        fcn = to_fcn(model_cpu).eval()
        labels = automatic_labels(
            fcn_maps(fcn, parts["holdout"], desc="auto labels", **{**map_args, "device": torch.device("cpu")}),
            ranking.ranked_union(),
            ranking.thresholds,
            categories=config.label_categories,
        )
        (staging / CONCEPT_LABELS_FILE).write_text(json.dumps(labels, indent=1) + "\n")
        log.info("automatic labels for %d of %d ranked units", len(labels), len(ranking.ranked_union()))
    quality = None
    if quality_report and any(r.lesions for r in parts["test"]):
        quality = assess(
            fcn_maps(fcn, parts["test"], desc="explanation quality", **{**map_args, "device": torch.device("cpu")}),
            weight=weight, classes=CLASSES, labels=labels_by_unit(labels), rankings=ranking.to_json(),
            score_rule=config.score_rule, patch_cells=patch_cells(config.patch_size),
            dataset={"manifest": str(Path(manifest).resolve()), "part": "test",
                     "labels": f"{CONCEPT_LABELS_FILE} (automatic)" if auto_label else "none"},
            bars=DEMO_BARS if auto_label else None,
        )
        write_report(quality, staging / QUALITY_DIR, title=config.name)
        log.info("explanation quality on the test split: %s", headline(quality.figures))

    meta: dict[str, Any] = {
        "name": config.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model_meta(config.depth, num_units(model_cpu)),
        "preprocessing": preprocessing_meta(mean, std, patch_size=config.patch_size, short_side=short_side),
        "patch_rule": config.patch_rule.to_dict(),
        "split": {
            "seed": config.seed,
            "by": "case_id",
            "stratified_by": "case pathology (worst finding of the case)",
            "fractions": list(config.split_fractions),
            "cases": {p: len({r.case_id for r in parts[p]}) for p in PARTS},
            "images": {p: len(parts[p]) for p in PARTS},
            "patches": {p: patches[p].class_counts() for p in PARTS},
        },
        "training": {
            "config": config.to_dict(),
            "best_epoch": result.best_epoch,
            "recipe": config.recipe,
            "selection": "the last epoch" if config.select_epoch == "last" else "best hold-out mean one-vs-rest AUC",
            "precision": result.history[-1].get("precision", "fp32") if result.history else "fp32",
            "history": result.history,
            "run_file": CONFIG_FILE,
            "learning_curves": LEARNING_CURVES_FILE,
            "distributed": {"world_size": dist.world_size, "backend": dist.backend},
            "device": str(device),
            "seconds": round(time.perf_counter() - started, 1),
        },
        "metrics": {
            "test_patches": test_metrics,
            "explanation_quality": None if quality is None else {
                "report": QUALITY_JSON, "part": "test", **headline(quality.figures)},
        },
        "image_score": {"rule": config.score_rule, "definition": SCORE_RULE_DEFINITIONS[config.score_rule]},
        "ranking": {
            "file": RANKINGS_FILE,
            "top_per_image": config.top_per_image,
            "top_per_class": config.top_per_class,
            "coverage": {name: ranking.coverage(c) for c, name in enumerate(CLASSES)},
        },
        "unit_visualisation": unit_visualisation_meta(
            top_patches=top_patches, threshold_source=VISUALISATION_THRESHOLD, quantile=config.threshold_quantile,
            images_root=Path(manifest).resolve().parent,
        ),
        "embedding": {"file": EMBEDDING_FILE, "method": embedding["method"],
                      "explained_variance_ratio": embedding["explained_variance_ratio"]},
        "suspicious_patches": write_suspicious_patches(staging, suspicious, source="holdout"),
        "data": {"manifest": str(Path(manifest).resolve()), "images": len(records)},
        "software": {
            "deepminer": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
    }
    if aux_features:
        meta["model"]["aux_features"] = [f.to_json() for f in aux_features]
        meta["model"]["onnx"]["aux_input"] = {
            "name": AUX_INPUT_NAME,
            "layout": "(N, J) float32",
            "values": "raw, in the order of model.aux_features; z = (a - mean) / std is computed inside the graph",
            "normalisation": "mean and population std over the training cases (each case once)",
        }
        meta["model"]["aux_term"] = (
            "logits_c(x, y) = sum_k w_ck A_k(x, y) + b_c + sum_j v_cj z_j; V = head.npz aux_weight (C, J)"
        )
    finalise_bundle(staging, meta)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    if int8:
        from training.quantize.command import quantize_bundle

        quantize_bundle(out_dir, progress=progress)  # its hold-out and test parts, from meta.json's split
    bundle = load_bundle(out_dir)
    log.info("bundle %s written to %s in %.0f s", bundle.id, out_dir, time.perf_counter() - started)
    return out_dir
