"""Ranking layer4 units by influence over the hold-out mammograms, streamed (DESIGN.md §2).

For every hold-out image and class, the ``top_per_image`` units by influence
``max_xy A_k(x, y) · w_ck`` are counted; the ``top_per_class`` most frequent
units per class go to the experts. Only per-unit counters and the thresholds'
top activations are kept, never an image's features, so memory does not grow
with the number of images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from deepminer.auxiliary import aux_vector
from deepminer.fcn import FullyConvolutional
from deepminer.formulas import TopQuantile, coverage, influence, most_frequent_units, top_units
from deepminer.grid import feature_grid_shape, resized_shape
from deepminer.imaging import network_input, read_image, read_image_shape
from deepminer.scoring import input_gray
from training.manifest import ImageRecord


@dataclass(frozen=True)
class ImageMaps:
    """One image through the FCN: its pixels, the network input's grayscale, ``(C, h, w)`` logits and ``(K, h, w)`` features."""

    record: ImageRecord
    pixels: np.ndarray
    input_shape: tuple[int, int]
    logits: np.ndarray
    features: np.ndarray
    gray: np.ndarray  # (H', W') the network input before normalisation (deepminer.scoring.input_gray)


@torch.inference_mode()
def fcn_maps(
    fcn: FullyConvolutional,
    records: Sequence[ImageRecord],
    *,
    short_side: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    desc: str = "FCN",
    progress: bool = True,
) -> Iterator[ImageMaps]:
    """Run whole images through the FCN one at a time (a generator: nothing accumulates).

    An FCN with auxiliary features gets each record's values (``record.aux``).
    """
    fcn.eval().to(device)
    for record in tqdm(records, desc=desc, unit="img", disable=not progress):
        pixels = read_image(record.image_path)
        x = network_input(pixels, short_side=short_side, mean=mean, std=std)
        aux = None
        if fcn.aux is not None:
            aux = torch.from_numpy(aux_vector(record.aux, fcn.aux.names, owner=f"image {record.image_id!r}")[None])
        logits, features = fcn(torch.from_numpy(x).to(device), None if aux is None else aux.to(device))
        yield ImageMaps(
            record=record,
            pixels=pixels,
            input_shape=(x.shape[2], x.shape[3]),
            logits=logits[0].float().cpu().numpy(),
            features=features[0].float().cpu().numpy(),
            gray=input_gray(x, mean, std),
        )


def activations_per_unit(records: Sequence[ImageRecord], *, short_side: int) -> int:
    """How many layer4 activations each unit produces over ``records`` (from image headers only)."""
    total = 0
    for record in records:
        height, width = read_image_shape(record.image_path)
        total += int(np.prod(feature_grid_shape(*resized_shape(height, width, short_side))))
    return total


@dataclass(frozen=True)
class UnitRanking:
    """Counters of the ranking pass and what follows from them."""

    classes: tuple[str, ...]
    num_images: int
    top_per_image: int
    top_per_class: int
    counts: np.ndarray  # (C, K): images whose top list held the unit
    influence_sum: np.ndarray  # (C, K): summed influence over those images
    thresholds: np.ndarray  # (K,): per-unit activation threshold at threshold_quantile
    threshold_quantile: float

    def ranked(self, class_index: int) -> np.ndarray:
        """The class's most frequent units, most frequent first."""
        return most_frequent_units(self.counts[class_index], self.influence_sum[class_index], self.top_per_class)

    def coverage(self, class_index: int) -> float:
        return coverage(self.counts[class_index], self.ranked(class_index), self.top_per_image * self.num_images)

    def ranked_union(self) -> list[int]:
        """Every unit ranked for any class, sorted by id."""
        return sorted({int(k) for c in range(len(self.classes)) for k in self.ranked(c)})

    def to_json(self) -> dict[str, Any]:
        per_class = {}
        for c, name in enumerate(self.classes):
            units = []
            for rank, k in enumerate(self.ranked(c), start=1):
                count = int(self.counts[c, k])
                units.append(
                    {
                        "unit_id": int(k),
                        "rank": rank,
                        "count": count,
                        "mean_influence": float(self.influence_sum[c, k] / count),
                    }
                )
            per_class[name] = {
                "coverage": self.coverage(c),
                "slots_total": self.top_per_image * self.num_images,
                "units": units,
            }
        return {
            "classes": list(self.classes),
            "source": "hold-out mammograms, whole images through the FCN",
            "num_images": self.num_images,
            "num_units": int(self.counts.shape[1]),
            "top_per_image": self.top_per_image,
            "top_per_class": self.top_per_class,
            "threshold_quantile": self.threshold_quantile,
            "unit_thresholds": [float(v) for v in self.thresholds],
            "per_class": per_class,
        }


def rank_units(
    fcn: FullyConvolutional,
    records: Sequence[ImageRecord],
    *,
    classes: Sequence[str],
    short_side: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    top_per_image: int = 8,
    top_per_class: int = 20,
    threshold_quantile: float = 0.99,
    progress: bool = True,
    watch: Callable[[Iterable[ImageMaps]], Iterable[ImageMaps]] | None = None,
) -> UnitRanking:
    """One streamed pass over ``records``: influence counts per class and unit thresholds.

    ``watch``: wraps the stream of maps before the ranking reads it, so other passes over the same images can
    observe it instead of running the FCN again (e.g. :meth:`training.suspicious.SuspiciousCells.watch`).
    """
    if not records:
        raise ValueError("no hold-out images to rank units on")
    weight = fcn.head.weight.detach()[:, :, 0, 0].float().cpu().numpy()
    num_classes, num_units = weight.shape
    counts = np.zeros((num_classes, num_units), dtype=np.int64)
    influence_sum = np.zeros((num_classes, num_units), dtype=np.float64)
    quantiles = TopQuantile(
        num_units, total=activations_per_unit(records, short_side=short_side), q=threshold_quantile
    )
    maps = fcn_maps(
        fcn, records, short_side=short_side, mean=mean, std=std, device=device, desc="ranking units", progress=progress
    )
    for item in maps if watch is None else watch(maps):
        scores = influence(item.features, weight)
        for c in range(num_classes):
            top = top_units(scores[c], top_per_image)
            counts[c, top] += 1
            influence_sum[c, top] += scores[c, top]
        quantiles.update(item.features)
    return UnitRanking(
        classes=tuple(classes),
        num_images=len(records),
        top_per_image=top_per_image,
        top_per_class=top_per_class,
        counts=counts,
        influence_sum=influence_sum,
        thresholds=quantiles.thresholds(),
        threshold_quantile=threshold_quantile,
    )
