"""Does the CAM point at the lesion? Peak-in-lesion rate on whole mammograms, against chance."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from deepminer.formulas import class_activation_map
from deepminer.grid import GridMapping
from training.data import load_lesion_masks
from training.ranking import ImageMaps
from training.tissue import tissue_mask


def cam_peak_in_lesion(maps: Iterable[ImageMaps], weight: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """For each image with lesions, whether the CAM peak of its pathology class falls inside a lesion.

    The peak is the CAM's largest cell, placed at its centre in image pixels.
    Chance is the share of breast tissue that is lesion: where a peak placed at
    random on the breast would land inside a lesion.
    """
    hits, chance, n = 0, [], 0
    for item in maps:
        record = item.record
        if not record.lesions:
            continue
        lesions = load_lesion_masks(record, item.pixels.shape)
        lesion_union = np.zeros(item.pixels.shape, dtype=bool)
        for _, mask in lesions:
            lesion_union |= mask
        cam = class_activation_map(item.features, weight, classes.index(record.pathology))
        mapping = GridMapping.for_input(image_shape=item.pixels.shape, input_shape=item.input_shape)
        i, j = np.unravel_index(int(np.argmax(cam)), cam.shape)
        y, x = mapping.centre(i, j)
        y = int(np.clip(round(y), 0, item.pixels.shape[0] - 1))
        x = int(np.clip(round(x), 0, item.pixels.shape[1] - 1))
        hits += bool(lesion_union[y, x])
        breast = tissue_mask(item.pixels) | lesion_union
        chance.append(float(lesion_union.sum()) / float(breast.sum()))
        n += 1
    return {
        "images": n,
        "peak_in_lesion_rate": hits / n if n else None,
        "chance_rate": float(np.mean(chance)) if chance else None,
    }
