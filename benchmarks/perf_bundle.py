"""Model bundles for the performance suite: a ResNet of any depth with random weights, at any input size.

Speed does not depend on what the weights learned, so the suite measures a
randomly initialised ResNet (seeded) instead of training one for hours. Its
BatchNorm statistics are set from phantom mammograms (:func:`calibrate_batchnorm`),
so activations have a trained network's scale rather than growing through
every block; reduced-precision arithmetic is compared on them. The bundle is otherwise real: the FCN conversion, the ONNX export checked against
torch, and unit rankings and thresholds from a streamed ranking pass over
phantom mammograms (:func:`training.ranking.rank_units`), so the service loads
it like any other. Bundles are cached by depth, input size and seed.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from deepminer import imaging
from deepminer.bundle import (
    HEAD_FILE,
    META_FILE,
    ONNX_FILE,
    RANKINGS_FILE,
    WEIGHTS_FILE,
    Bundle,
    finalise_bundle,
    load_bundle,
)
from deepminer.fcn import build_classifier, num_units, to_fcn
from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD
from training.export import export_onnx
from training.manifest import ImageRecord
from training.patches import CLASSES
from training.pipeline import model_meta, preprocessing_meta
from training.ranking import rank_units

RANKING_IMAGES = 4
CALIBRATION_SIDE = 227


def random_bundle(
    cache: Path, *, depth: int, short_side: int, ranking_images: list[ImageRecord], seed: int = 0
) -> Bundle:
    """The cached bundle ``resnet{depth}-random{seed}-calibrated-{short_side}`` under ``cache``, built first when missing."""
    out = cache / f"resnet{depth}-random{seed}-calibrated-{short_side}"
    if (out / META_FILE).is_file():
        return load_bundle(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    torch.manual_seed(seed)
    classifier = build_classifier(depth=depth, num_classes=len(CLASSES))
    records = ranking_images[:RANKING_IMAGES]
    calibrate_batchnorm(classifier, records)
    fcn = to_fcn(classifier).eval()
    ranking = rank_units(fcn, records, classes=CLASSES, short_side=short_side, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD, device=torch.device("cpu"), progress=True)
    torch.save(classifier.state_dict(), staging / WEIGHTS_FILE)
    weight = fcn.head.weight.detach()[:, :, 0, 0].numpy()
    np.savez(staging / HEAD_FILE, weight=weight, bias=fcn.head.bias.detach().numpy())
    export_onnx(fcn, staging / ONNX_FILE, example_shape=(224, 320))
    (staging / RANKINGS_FILE).write_text(json.dumps(ranking.to_json(), indent=1) + "\n")
    meta = {
        "name": out.name,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model_meta(depth, num_units(classifier)),
        "preprocessing": preprocessing_meta(IMAGENET_MEAN, IMAGENET_STD, patch_size=227, short_side=short_side),
        "benchmark": {
            "weights": f"random initialisation, torch.manual_seed({seed}), BatchNorm statistics from "
                       f"{len(records)} phantoms; for speed measurements only",
            "ranking": f"{len(records)} phantom mammograms",
        },
    }
    finalise_bundle(staging, meta)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return load_bundle(out)


def calibrate_batchnorm(classifier: torch.nn.Module, records: list[ImageRecord]) -> None:
    """Set every BatchNorm's running mean and variance to those of ``records`` at a short side of 227 px.

    One pass in train mode with a cumulative average (``momentum=None``); the model is left in eval mode.
    """
    inputs = [imaging.network_input(imaging.read_image(r.image_path), short_side=CALIBRATION_SIDE)[0] for r in records]
    rows, cols = min(x.shape[1] for x in inputs), min(x.shape[2] for x in inputs)
    batch = torch.from_numpy(np.stack([x[:, :rows, :cols] for x in inputs]))
    norms = [m for m in classifier.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    classifier.train()
    with torch.no_grad():
        classifier(batch)
    for norm in norms:
        norm.momentum = 0.1
    classifier.eval()


def resized_bundle(source: Bundle, cache: Path, *, short_side: int) -> Bundle:
    """A copy of ``source`` that scales uploads to ``short_side`` instead (same weights and rankings)."""
    out = cache / f"{source.root.name}-as-{short_side}"
    if (out / META_FILE).is_file():
        return load_bundle(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source.root, staging)
    (staging / META_FILE).unlink()
    meta = {key: value for key, value in source.meta.items() if key not in ("files", "schema_version")}
    meta["name"] = out.name
    meta["preprocessing"] = {**meta["preprocessing"], "input_short_side": short_side}
    finalise_bundle(staging, meta)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return load_bundle(out)
