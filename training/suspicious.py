"""The hold-out set's most suspicious patches: the FCN cells most likely malignant, and most likely benign.

The explanation viewer starts from a mammogram the user brings; this list
gives a reviewer somewhere to start instead: the ``n`` cells of the hold-out
mammograms with the highest probability of each lesion class, each with its
image and where it lies. The probabilities are the FCN's per-cell softmax
(:func:`deepminer.formulas.softmax` of the logit maps that
:func:`training.ranking.fcn_maps` streams), over breast cells only
(:func:`deepminer.scoring.breast_cells`), as the image-level scores are.

Near duplicates: a lesion lights up several neighbouring cells, and the list
should show the lesion once. Within one image and class, cells are taken in
order of probability (greedy non-maximum suppression); a kept cell drops every
cell of that image within Chebyshev distance ``r = max(1, ceil(patch / 64))``
cells of it (``patch`` the classifier's patch side in network-input pixels,
64 = two layer4 strides), so two kept patches of one image never touch
neighbouring cells and overlap by at most about half a patch side. Different
images, and the two classes, are independent.

Each entry records two boxes, in the original image's pixels (``box``,
``cell_box``) and in the stored image's pixels (``context_box``,
``context_cell_box``): ``box`` is the classifier's patch (``patch`` px at the
network's input scale) centred on the cell, moved to lie inside the image;
``cell_box`` is the cell's own ``stride × stride`` square. Boxes are
``{top, left, height, width}`` with pixel edges at whole numbers (the image's
corner at 0, 0). The stored image is the mammogram as the network saw it (short
side scaled to the input size), 8-bit, so a region query on it repeats the
hold-out pass: the service resizes it to its own size, which changes nothing.
``suspicious/index.json``::

    {"source": "holdout", "classes": [...], "per_class": n, "suppression": str,
     "images": {image_id: {"file", "shape", "original_shape"}},
     "patches": [{"id", "class", "rank", "probability", "image_id", "cell": [i, j],
                  "box", "cell_box", "context_box", "context_cell_box"}]}   # per class, by rank
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepminer.bundle import SUSPICIOUS_DIR, SUSPICIOUS_INDEX_FILE
from deepminer.formulas import softmax
from deepminer.grid import NETWORK_STRIDE, GridMapping
from deepminer.imaging import read_image, resize
from deepminer.scoring import BACKGROUND_CLASS, breast_cells
from deepminer.unit_patches import to_uint8
from training.manifest import ImageRecord
from training.ranking import ImageMaps
from training.visualise import save_png


@dataclass(frozen=True)
class SuspiciousCell:
    """One kept cell: its class, probability, image and grid position, and how the grid maps onto the image."""

    class_name: str
    probability: float
    record: ImageRecord
    cell: tuple[int, int]
    mapping: GridMapping
    input_shape: tuple[int, int]
    order: int  # position of the image in the stream, so ties keep stream order


def suppression_radius(patch_size: int) -> int:
    """Chebyshev radius in cells around a kept cell within which no other cell of the image is kept."""
    return max(1, math.ceil(patch_size / (2 * NETWORK_STRIDE)))


def non_max_suppression(probability: np.ndarray, allowed: np.ndarray, *, radius: int, n: int) -> list[tuple[int, int]]:
    """Up to ``n`` cells of an ``(h, w)`` map, most probable first, no two within Chebyshev distance ``radius``.

    Only ``allowed`` cells are candidates; ties go to the lower flat index (row-major).
    """
    if probability.shape != allowed.shape:
        raise ValueError(f"allowed must be the map's shape {probability.shape}, got {allowed.shape}")
    free = allowed.copy()
    flat = probability.reshape(-1)
    kept: list[tuple[int, int]] = []
    for index in np.argsort(-flat, kind="stable"):
        if len(kept) == n:
            break
        i, j = divmod(int(index), probability.shape[1])
        if not free[i, j]:
            continue
        kept.append((i, j))
        free[max(0, i - radius) : i + radius + 1, max(0, j - radius) : j + radius + 1] = False
    return kept


class SuspiciousCells:
    """Running top ``n`` cells per lesion class over a stream of :class:`ImageMaps`; memory stays ``O(n)``.

    Feed it with :meth:`observe`, or let it watch a stream another pass
    consumes (:meth:`watch`), so no extra FCN pass is needed.
    """

    def __init__(self, classes: Sequence[str], *, n: int, patch_size: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"suspicious patches per class must be a whole number >= 1, got {n!r}")
        self.classes = tuple(classes)
        self.lesion_classes = tuple(c for c in self.classes if c != BACKGROUND_CLASS)
        self.n = n
        self.patch_size = patch_size
        self.radius = suppression_radius(patch_size)
        self.images = 0
        self.best: dict[str, list[SuspiciousCell]] = {c: [] for c in self.lesion_classes}

    def observe(self, item: ImageMaps) -> None:
        """Merge one image's best cells per lesion class into the running lists."""
        probabilities = softmax(item.logits.astype(np.float64), axis=0)
        grid = probabilities.shape[1:]
        on_breast = breast_cells(item.gray, grid)
        allowed = on_breast if on_breast.any() else np.ones(grid, dtype=bool)
        mapping = GridMapping.for_input(image_shape=item.pixels.shape[:2], input_shape=item.input_shape)
        for name in self.lesion_classes:
            prob = probabilities[self.classes.index(name)]
            found = [
                SuspiciousCell(name, float(prob[i, j]), item.record, (i, j), mapping, item.input_shape, self.images)
                for i, j in non_max_suppression(prob, allowed, radius=self.radius, n=self.n)
            ]
            merged = self.best[name] + found
            merged.sort(key=lambda cell: (-cell.probability, cell.order, cell.cell))
            self.best[name] = merged[: self.n]
        self.images += 1

    def watch(self, maps: Iterable[ImageMaps]) -> Iterator[ImageMaps]:
        """Pass ``maps`` through unchanged, observing each item on the way."""
        for item in maps:
            self.observe(item)
            yield item


def _inside(start: float, size: float, limit: float) -> tuple[float, float]:
    """A span of ``size`` starting at ``start`` moved to lie within ``[0, limit]`` (cut to ``limit`` if longer)."""
    size = min(size, limit)
    return min(max(start, 0.0), limit - size), size


def _box(centre: tuple[float, float], size: tuple[float, float], shape: tuple[int, int]) -> dict[str, float]:
    """A box of ``size`` (rows, columns) centred on pixel ``centre`` (centres at whole numbers), inside ``shape``."""
    top, height = _inside(centre[0] + 0.5 - size[0] / 2, size[0], shape[0])
    left, width = _inside(centre[1] + 0.5 - size[1] / 2, size[1], shape[1])
    return {"top": round(top, 2), "left": round(left, 2), "height": round(height, 2), "width": round(width, 2)}


def _scaled(box: dict[str, float], ry: float, rx: float) -> dict[str, float]:
    return {
        "top": round(box["top"] * ry, 2),
        "left": round(box["left"] * rx, 2),
        "height": round(box["height"] * ry, 2),
        "width": round(box["width"] * rx, 2),
    }


def patch_entry(cell: SuspiciousCell, rank: int, patch_size: int) -> dict[str, Any]:
    """The index entry of one kept cell (module docstring), without the image file."""
    m = cell.mapping
    shape = m.image_shape
    ry, rx = cell.input_shape[0] / shape[0], cell.input_shape[1] / shape[1]
    centre = m.centre(*cell.cell)
    box = _box(centre, (patch_size / ry, patch_size / rx), shape)
    cell_box = _box(centre, m.scale, shape)
    return {
        "id": f"{cell.class_name}-{rank}",
        "class": cell.class_name,
        "rank": rank,
        "probability": cell.probability,
        "image_id": cell.record.image_id,
        "cell": list(cell.cell),
        "box": box,
        "cell_box": cell_box,
        "context_box": _scaled(box, ry, rx),
        "context_cell_box": _scaled(cell_box, ry, rx),
    }


def write_suspicious_patches(root: Path, found: SuspiciousCells, *, source: str = "holdout") -> dict[str, Any]:
    """Write ``suspicious/index.json`` and the images it names under ``root``; returns ``meta.json``'s entry.

    Each image is stored once, whichever classes and cells point at it, as
    the network saw it (module docstring).
    """
    root = Path(root)
    images: dict[str, dict[str, Any]] = {}
    patches: list[dict[str, Any]] = []
    for name in found.lesion_classes:
        for rank, cell in enumerate(found.best[name], start=1):
            image_id = cell.record.image_id
            if image_id not in images:
                rel = f"{SUSPICIOUS_DIR}/images/{len(images):04d}.png"
                save_png(root / rel, to_uint8(resize(read_image(cell.record.image_path), cell.input_shape)))
                images[image_id] = {
                    "file": rel,
                    "shape": list(cell.input_shape),
                    "original_shape": list(cell.mapping.image_shape),
                }
            patches.append(patch_entry(cell, rank, found.patch_size))
    suppression = (
        f"greedy non-maximum suppression per image and class: a kept cell drops the cells within Chebyshev "
        f"distance {found.radius} of it"
    )
    index = {
        "source": source,
        "classes": list(found.lesion_classes),
        "per_class": found.n,
        "images_seen": found.images,
        "probability": "the FCN's per-cell softmax over breast cells (deepminer.scoring.breast_cells)",
        "suppression": suppression,
        "patch_size": found.patch_size,
        "images": images,
        "patches": patches,
    }
    (root / SUSPICIOUS_INDEX_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / SUSPICIOUS_INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    return {
        "file": SUSPICIOUS_INDEX_FILE,
        "per_class": found.n,
        "classes": list(found.lesion_classes),
        "source": source,
        "patches": len(patches),
        "images": len(images),
        "suppression": suppression,
    }
