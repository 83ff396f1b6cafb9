"""Automatic unit labels from known concept masks (the demo's seeded annotations).

Phantom images come with a mask for every concept they contain, so each
ranked unit can be named without an expert: binarise the unit's upsampled
activation map at its threshold (DESIGN.md §2) and measure, over the hold-out
images, ``IoU_kc = Σ|M_k ∧ L_c| / Σ|M_k ∨ L_c|`` with every concept's masks L_c.
The best concept becomes the label, recorded as made by this procedure, never
by a person.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepminer.formulas import binarise
from deepminer.grid import GridMapping, upsample
from deepminer.imaging import read_image, resize
from training.ranking import ImageMaps

AUTO_ANNOTATOR = "auto:concept-iou"


@dataclass
class _Concept:
    lexicon: str
    pathologies: Counter[str]
    area: float = 0.0


def concept_iou(
    maps: Iterable[ImageMaps], units: Sequence[int], thresholds: np.ndarray
) -> tuple[list[str], dict[str, _Concept], np.ndarray]:
    """IoU of every unit (rows) with every concept seen (columns), at network-input resolution."""
    units = list(units)
    concepts: dict[str, _Concept] = {}
    inter: dict[str, np.ndarray] = {}
    unit_area = np.zeros(len(units))
    for item in maps:
        mapping = GridMapping.for_input(image_shape=item.pixels.shape, input_shape=item.input_shape)
        unit_masks = np.stack(
            [binarise(upsample(item.features[k], mapping, item.input_shape), thresholds[k]) for k in units]
        )
        unit_area += unit_masks.reshape(len(units), -1).sum(axis=1)
        for finding in item.record.findings:
            mask = resize((read_image(finding.mask_path) > 0.5).astype(np.float32), item.input_shape) > 0.5
            entry = concepts.setdefault(finding.concept, _Concept(finding.lexicon, Counter()))
            entry.pathologies[finding.pathology or "none"] += 1
            entry.area += float(mask.sum())
            inter.setdefault(finding.concept, np.zeros(len(units)))
            inter[finding.concept] += (unit_masks & mask).reshape(len(units), -1).sum(axis=1)
    names = sorted(concepts)
    iou = np.zeros((len(units), len(names)))
    for j, name in enumerate(names):
        union = unit_area + concepts[name].area - inter[name]
        iou[:, j] = np.divide(inter[name], union, out=np.zeros(len(units)), where=union > 0)
    return names, concepts, iou


def automatic_labels(
    maps: Iterable[ImageMaps],
    units: Sequence[int],
    thresholds: np.ndarray,
    *,
    min_iou: float = 0.02,
) -> list[dict[str, Any]]:
    """One label per unit whose best concept IoU reaches ``min_iou`` (rows for ``annotations.io``)."""
    names, concepts, iou = concept_iou(maps, units, thresholds)
    labels = []
    for row, unit in enumerate(units):
        if not names:
            break
        best = int(np.argmax(iou[row]))
        score = float(iou[row, best])
        if score < min_iou:
            continue
        concept = concepts[names[best]]
        pathology = concept.pathologies.most_common(1)[0][0]
        labels.append(
            {
                "unit_id": int(unit),
                "label": names[best],
                "category": concept.lexicon,
                "cancer_association": "yes" if pathology == "malignant" else "no",
                "recognizable": True,
                "phenomena": "single",
                "description": (
                    f"Automatic label: IoU {score:.3f} between the unit's map, binarised at its "
                    f"activation threshold, and the '{names[best]}' masks of the hold-out phantoms."
                ),
                "annotator": AUTO_ANNOTATOR,
                "source": "automatic",
            }
        )
    return labels
