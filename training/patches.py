"""Cutting labelled patches from whole mammograms (DESIGN.md §1).

A square window of side ``side_fraction`` × image width slides with a stride of
``stride_fraction`` × side. A window is kept when at least ``min_tissue`` of it
is breast tissue. It takes a lesion's pathology when at least
``lesion_fraction_of_patch`` of the window is that lesion, or at least
``lesion_fraction_inside`` of the lesion lies inside the window; malignant wins
over benign, and benign over normal.

A window that touches a lesion but meets neither 30% rule (and no other lesion
labels it) is *partly touching*. ``PatchRule.partly_touching`` says what
happens to it: ``"drop"`` (the default) leaves it out of the data set,
``"normal"`` labels it normal. Dropping is the default because such a window
shows part of a lesion: labelling it normal teaches the network that lesion
tissue is normal, and the paper's normal class means "no lesion here". The
reference's labelling module (``mammogram.py`` of jimmyyhwu/ddsm-visual-
primitives, which computed each patch's lesion percentages) is not part of its
published tree, so the reference's exact handling could not be read; its
label files are named by the two thresholds alone
(``...breastpct0.5_patchpct0.3_lesionpct0.3``). ``"normal"`` reproduces this
project's earlier bundles.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

from deepminer import unit_patches

CLASSES = ("normal", "benign", "malignant")
"""Class order of every model this project trains: index 0, 1, 2."""
PARTLY_TOUCHING: Final = ("drop", "normal")
"""What :class:`PatchRule` may do with a window that touches a lesion but meets neither 30% rule."""


@dataclass(frozen=True)
class PatchRule:
    """The paper's patch rule; recorded verbatim in every bundle."""

    side_fraction: float = 0.25
    stride_fraction: float = 0.5
    min_tissue: float = 0.5
    lesion_fraction_of_patch: float = 0.3
    lesion_fraction_inside: float = 0.3
    priority: tuple[str, ...] = ("malignant", "benign", "normal")
    partly_touching: str = "drop"
    """``"drop"`` or ``"normal"``: a window touching a lesion but meeting neither lesion rule (module docstring)."""

    def __post_init__(self) -> None:
        if self.partly_touching not in PARTLY_TOUCHING:
            raise ValueError(f"partly_touching must be one of {PARTLY_TOUCHING}, got {self.partly_touching!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["priority"] = list(self.priority)
        partly = "dropped" if self.partly_touching == "drop" else "labelled normal"
        d["text"] = (
            f"square window of side {self.side_fraction:g} x image width, stride {self.stride_fraction:g} x side; "
            f"kept if >= {self.min_tissue:.0%} breast tissue; labelled with a lesion's pathology if >= "
            f"{self.lesion_fraction_of_patch:.0%} of the window is that lesion or >= {self.lesion_fraction_inside:.0%} "
            f"of the lesion is inside the window; priority {' > '.join(self.priority)}; a window touching a lesion "
            f"that meets neither lesion rule (partly_touching) is {partly}"
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
    or ``malignant``. A box that would be normal although it overlaps a lesion
    is left out when ``rule.partly_touching == "drop"``.
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
        touched = False
        for pathology, integral, lesion_area in lesion_sums:
            overlap = _box_sum(integral, box)
            if overlap == 0:
                continue
            touched = True
            if overlap >= rule.lesion_fraction_of_patch * area or overlap >= rule.lesion_fraction_inside * lesion_area:
                if rank[pathology] < rank[label]:
                    label = pathology
        if label == "normal" and touched and rule.partly_touching == "drop":
            continue
        kept.append((box, label))
    return kept


def crop_patch(pixels: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The window's pixels resized to ``size`` × ``size`` (same resampling as whole images); the service crops
    a unit's top patches again with the same function (:func:`deepminer.unit_patches.crop_patch`)."""
    return unit_patches.crop_patch(pixels, box.top, box.left, box.side, size)
