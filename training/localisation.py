"""Does the CAM point at the lesion? Peak-cell-on-lesion rate on whole mammograms, against chance."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from deepminer.formulas import class_activation_map
from deepminer.grid import GridMapping
from training.data import load_lesion_masks
from training.ranking import ImageMaps
from deepminer.tissue import tissue_mask


def _footprint(mapping: GridMapping, i: int, j: int) -> tuple[slice, slice]:
    """Upload pixels a cell stands for: its centre ± half a cell per axis, clipped to the image."""
    cy, cx = mapping.centre(i, j)
    hy, hx = mapping.scale[0] / 2, mapping.scale[1] / 2
    rows = slice(max(0, int(np.ceil(cy - hy))), min(mapping.image_shape[0], int(np.ceil(cy + hy))))
    cols = slice(max(0, int(np.ceil(cx - hx))), min(mapping.image_shape[1], int(np.ceil(cx + hx))))
    return rows, cols


def _breast_cells(mapping: GridMapping, breast: np.ndarray) -> np.ndarray:
    """Boolean grid: the cells whose centre lies on the breast."""
    h, w = mapping.grid_shape
    cy, cx = mapping.centre(np.arange(h)[:, None], np.arange(w)[None, :])
    ys = np.clip(np.rint(cy), 0, breast.shape[0] - 1).astype(int)
    xs = np.clip(np.rint(cx), 0, breast.shape[1] - 1).astype(int)
    return breast[np.broadcast_to(ys, (h, w)), np.broadcast_to(xs, (h, w))]


def cam_peak_in_lesion(maps: Iterable[ImageMaps], weight: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """How often the CAM's peak on the breast lies on a lesion, for images with lesions, against chance.

    The CAM is that of the image's pathology class; its peak is taken over the
    cells centred on the breast (background cells, which training patches
    never consist of, do not compete). A cell "lies on a lesion" when its
    footprint (the upload pixels it stands for: its centre ± half a cell)
    overlaps a lesion mask. Chance is the share of breast cells that lie on a
    lesion: the hit rate of a peak placed on a random breast cell. Both use the
    same cells, so the grid's coarseness favours neither.
    """
    hits, chance, n = 0, [], 0
    for item in maps:
        record = item.record
        if not record.lesions:
            continue
        lesion = np.zeros(item.pixels.shape, dtype=bool)
        for _, mask in load_lesion_masks(record, item.pixels.shape):
            lesion |= mask
        mapping = GridMapping.for_input(image_shape=item.pixels.shape, input_shape=item.input_shape)
        cells = _breast_cells(mapping, tissue_mask(item.pixels) | lesion)
        if not cells.any():
            continue
        on_lesion = np.zeros(cells.shape, dtype=bool)
        for i, j in zip(*np.nonzero(cells)):
            on_lesion[i, j] = lesion[_footprint(mapping, int(i), int(j))].any()
        cam = class_activation_map(item.features, weight, classes.index(record.pathology))
        peak = np.unravel_index(int(np.argmax(np.where(cells, cam, -np.inf))), cam.shape)
        hits += bool(on_lesion[peak])
        chance.append(float(on_lesion[cells].mean()))
        n += 1
    return {
        "images": n,
        "definition": (
            "the CAM peak over breast cells overlaps a lesion mask; chance = share of breast cells overlapping a lesion"
        ),
        "peak_in_lesion_rate": hits / n if n else None,
        "chance_rate": float(np.mean(chance)) if chance else None,
    }
