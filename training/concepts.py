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
    maps: Iterable[ImageMaps], units: Sequence[int], thresholds: np.ndarray, *, categories: bool = False
) -> tuple[list[str], dict[str, _Concept], np.ndarray]:
    """IoU of every unit (rows) with every concept seen (columns), at network-input resolution.

    ``categories``: also score each BI-RADS category of the lesions as a
    concept of its own, named by the category (e.g. "Calcification"): the
    union of its lesions' masks in each image. A unit that answers to every
    calcification, whatever its type, is then named for what it sees rather
    than for its most frequent type.
    """
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
        by_category: dict[str, tuple[np.ndarray, list[str]]] = {}
        for finding in item.record.findings:
            mask = resize((read_image(finding.mask_path) > 0.5).astype(np.float32), item.input_shape) > 0.5
            _add(concepts, inter, finding.concept, finding.lexicon, [finding.pathology or "none"], mask, unit_masks)
            if categories and finding.is_lesion:
                union, pathologies = by_category.get(finding.lexicon, (np.zeros_like(mask), []))
                by_category[finding.lexicon] = (union | mask, [*pathologies, finding.pathology or "none"])
        for lexicon, (mask, pathologies) in by_category.items():
            _add(concepts, inter, lexicon, lexicon, pathologies, mask, unit_masks)
    names = sorted(concepts)
    iou = np.zeros((len(units), len(names)))
    for j, name in enumerate(names):
        union = unit_area + concepts[name].area - inter[name]
        iou[:, j] = np.divide(inter[name], union, out=np.zeros(len(units)), where=union > 0)
    return names, concepts, iou


def _add(
    concepts: dict[str, _Concept],
    inter: dict[str, np.ndarray],
    name: str,
    lexicon: str,
    pathologies: list[str],
    mask: np.ndarray,
    unit_masks: np.ndarray,
) -> None:
    """Count one image's mask of concept ``name``: its area, its pathologies and its overlap with every unit."""
    entry = concepts.setdefault(name, _Concept(lexicon, Counter()))
    entry.pathologies.update(pathologies)
    entry.area += float(mask.sum())
    inter.setdefault(name, np.zeros(unit_masks.shape[0]))
    inter[name] += (unit_masks & mask).reshape(unit_masks.shape[0], -1).sum(axis=1)


def automatic_labels(
    maps: Iterable[ImageMaps],
    units: Sequence[int],
    thresholds: np.ndarray,
    *,
    min_iou: float = 0.02,
    categories: bool = False,
) -> list[dict[str, Any]]:
    """One label per unit whose best concept IoU reaches ``min_iou`` (rows for ``annotations.io``).

    ``categories``: BI-RADS categories compete as concepts too (:func:`concept_iou`).
    """
    names, concepts, iou = concept_iou(maps, units, thresholds, categories=categories)
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
