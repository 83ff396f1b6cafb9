"""Cutting labelled patches from whole mammograms (DESIGN.md §1).

A square window of side ``side_fraction`` × image width slides with a stride of
``stride_fraction`` × side. A window is kept when at least ``min_tissue`` of it
is breast tissue. It takes a lesion's pathology when at least
``lesion_fraction_of_patch`` of the window is that lesion, or at least
``lesion_fraction_inside`` of the lesion lies inside the window; malignant wins
over benign, and benign over normal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deepminer.imaging import resize

CLASSES = ("normal", "benign", "malignant")
"""Class order of every model this project trains: index 0, 1, 2."""


@dataclass(frozen=True)
class PatchRule:
    """The paper's patch rule; recorded verbatim in every bundle."""

    side_fraction: float = 0.25
    stride_fraction: float = 0.5
    min_tissue: float = 0.5
    lesion_fraction_of_patch: float = 0.3
    lesion_fraction_inside: float = 0.3
    priority: tuple[str, ...] = ("malignant", "benign", "normal")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["priority"] = list(self.priority)
        d["text"] = (
            f"square window of side {self.side_fraction:g} x image width, stride {self.stride_fraction:g} x side; "
            f"kept if >= {self.min_tissue:.0%} breast tissue; labelled with a lesion's pathology if >= "
            f"{self.lesion_fraction_of_patch:.0%} of the window is that lesion or >= {self.lesion_fraction_inside:.0%} "
            f"of the lesion is inside the window; priority {' > '.join(self.priority)}"
        )
        return d


@dataclass(frozen=True)
class Box:
    """A window in image pixels: rows ``[top, top + side)``, columns ``[left, left + side)``."""

    top: int
    left: int
    side: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.side), slice(self.left, self.left + self.side)


def sliding_boxes(height: int, width: int, rule: PatchRule) -> list[Box]:
    """All windows of the sliding grid, row-major."""
    side = max(1, round(rule.side_fraction * width))
    stride = max(1, round(rule.stride_fraction * side))
    if side > height:
        return []
    return [
        Box(top, left, side)
        for top in range(0, height - side + 1, stride)
        for left in range(0, width - side + 1, stride)
    ]


def _integral(mask: np.ndarray) -> np.ndarray:
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    s[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return s


def _box_sum(integral: np.ndarray, box: Box) -> int:
    t, l, b, r = box.top, box.left, box.top + box.side, box.left + box.side
    return int(integral[b, r] - integral[t, r] - integral[b, l] + integral[t, l])


def label_boxes(
    boxes: list[Box],
    tissue: np.ndarray,
    lesions: list[tuple[str, np.ndarray]],
    rule: PatchRule,
) -> list[tuple[Box, str]]:
    """Apply the tissue and lesion rules; returns the kept boxes with their class.

    ``lesions`` holds ``(pathology, boolean mask)`` pairs; pathology is ``benign``
    or ``malignant``.
    """
    tissue_sum = _integral(tissue)
    lesion_sums = [(pathology, _integral(mask), int(mask.sum())) for pathology, mask in lesions]
    rank = {name: i for i, name in enumerate(rule.priority)}
    kept: list[tuple[Box, str]] = []
    for box in boxes:
        area = box.side * box.side
        if _box_sum(tissue_sum, box) < rule.min_tissue * area:
            continue
        label = "normal"
        for pathology, integral, lesion_area in lesion_sums:
            overlap = _box_sum(integral, box)
            if overlap == 0:
                continue
            if overlap >= rule.lesion_fraction_of_patch * area or overlap >= rule.lesion_fraction_inside * lesion_area:
                if rank[pathology] < rank[label]:
                    label = pathology
        kept.append((box, label))
    return kept


def crop_patch(pixels: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The window's pixels resized to ``size`` × ``size`` (same resampling as whole images)."""
    return resize(pixels[box.slices()], (size, size))
