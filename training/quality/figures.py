"""The explanation-quality figures of a set of FCN outputs (see :mod:`training.quality`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from deepminer.formulas import class_activation_map, influence, softmax, top_units
from deepminer.grid import NETWORK_STRIDE, GridMapping
from deepminer.scoring import BACKGROUND_CLASS, breast_cells, classifier_probabilities, image_scores
from training.data import load_lesion_masks
from training.ranking import ImageMaps

log = logging.getLogger(__name__)

POINTING_TOLERANCE_INPUT_PX = 15.0
"""Pointing-game tolerance in network-input pixels: about half a layer4 cell (32 px)."""
TOP_UNITS = 8
NAMED_UNITS = 3
QUALITY_DIR = "quality"
QUALITY_JSON = f"{QUALITY_DIR}/quality.json"
QUALITY_MARKDOWN = f"{QUALITY_DIR}/quality.md"
QUALITY_FIGURE = f"{QUALITY_DIR}/worst_cases.png"

DEMO_BARS: dict[str, tuple[str, float]] = {
    "auc_malignant": (">=", 0.90),
    "auc_benign": (">=", 0.90),
    "lesion_images_predicted_correctly": (">=", 0.80),
    "normal_images_predicted_normal": (">=", 0.80),
    "pointing_game": (">=", 0.90),
    "concept_named": (">=", 0.70),
    "background_max_lesion_probability": ("<=", 0.05),
    "lesion_ranked_units_named_by_lesion_concept": (">=", 0.50),
}
"""The bars the demo bundle must pass on phantoms it never saw (README, "How good are these explanations?")."""


@dataclass(frozen=True)
class UnitLabel:
    """One name of a unit: the label text and its BI-RADS lexicon category."""

    label: str
    category: str


def labels_by_unit(rows: Iterable[Mapping[str, Any]]) -> dict[int, list[UnitLabel]]:
    """Unit id → its labels, from annotation rows (``unit_id``, ``label``, ``category``; e.g. ``concept_labels.json``).

    Rows answered as not recognisable name nothing and are skipped.
    """
    out: dict[int, list[UnitLabel]] = {}
    for row in rows:
        if row.get("recognizable") is False or not row.get("label"):
            continue
        out.setdefault(int(row["unit_id"]), []).append(UnitLabel(str(row["label"]), str(row.get("category", ""))))
    return out


def pointing_hit(cam: np.ndarray, mapping: GridMapping, distance: np.ndarray, tolerance: float) -> tuple[bool, float]:
    """Pointing game on one image: (hit, chance).

    ``distance`` is each image pixel's distance in image pixels to the nearest
    lesion pixel (0 on the lesion), ``tolerance`` the allowance in image pixels.
    The CAM's global maximum cell (ties: the first in row-major order) hits when
    its centre, rounded to the nearest pixel, is within ``tolerance``; chance
    is the share of all cells whose centre is.
    """
    h, w = mapping.grid_shape
    cy, cx = mapping.centre(np.arange(h)[:, None], np.arange(w)[None, :])
    ys = np.clip(np.rint(np.broadcast_to(cy, (h, w))), 0, distance.shape[0] - 1).astype(int)
    xs = np.clip(np.rint(np.broadcast_to(cx, (h, w))), 0, distance.shape[1] - 1).astype(int)
    near = distance[ys, xs] <= tolerance
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return bool(near[peak]), float(near.mean())


def peak_offset(peak: tuple[float, float], masks: Sequence[np.ndarray], mapping: GridMapping) -> tuple[float, float]:
    """``peak`` (image pixels) minus the centre of mass of the nearest of ``masks``, in network-input pixels
    (down, right)."""
    centres = [np.argwhere(m).mean(axis=0) for m in masks if m.any()]
    if not centres:
        return float("nan"), float("nan")
    cy, cx = min(centres, key=lambda c: float(np.hypot(peak[0] - c[0], peak[1] - c[1])))
    return (peak[0] - cy) * NETWORK_STRIDE / mapping.scale[0], (peak[1] - cx) * NETWORK_STRIDE / mapping.scale[1]


def tolerance_image_px(mapping: GridMapping, tolerance_input_px: float = POINTING_TOLERANCE_INPUT_PX) -> float:
    """The pointing tolerance in image pixels: network-input pixels times image pixels per input pixel."""
    return tolerance_input_px * float(np.mean(mapping.scale)) / NETWORK_STRIDE


def named_units(
    scores: np.ndarray, labels: Mapping[int, Sequence[UnitLabel]], *, top: int = TOP_UNITS, named: int = NAMED_UNITS
) -> list[int]:
    """The first ``named`` units that carry a label among the ``top`` most influential (``scores``: one class's)."""
    return [int(k) for k in top_units(scores, top) if int(k) in labels][:named]


def names_finding(unit_labels: Sequence[UnitLabel], concepts: set[str], categories: set[str]) -> bool:
    """Does one of a unit's labels name one of the concepts, or one of their BI-RADS categories?"""
    return any(x.label in concepts or x.category in categories for x in unit_labels)


def one_vs_rest_auc(truth: Sequence[str], scores: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    """ROC AUC per class of ``scores`` (``(N, C)``) against ``truth`` (class names); None when a class is absent."""
    from sklearn.metrics import roc_auc_score

    truth_arr = np.asarray(truth)
    out: dict[str, float | None] = {}
    for c, name in enumerate(classes):
        positive = truth_arr == name
        out[name] = float(roc_auc_score(positive, scores[:, c])) if 0 < positive.sum() < len(truth_arr) else None
    return out


@dataclass
class _Tally:
    images: int = 0
    pointing_hits: int = 0
    named: int = 0
    right: int = 0

    def add(self, *, hit: bool, named: bool, right: bool) -> None:
        self.images += 1
        self.pointing_hits += hit
        self.named += named
        self.right += right

    def to_json(self) -> dict[str, Any]:
        n = self.images
        return {
            "images": n,
            "pointing_game": self.pointing_hits / n if n else None,
            "concept_named": self.named / n if n else None,
            "predicted_as_pathology": self.right / n if n else None,
        }


@dataclass
class _Case:
    """What the worst-case figure shows of one missed image."""

    image_id: str
    pixels: np.ndarray
    mapping: GridMapping
    cam: np.ndarray
    lesion: np.ndarray
    peak: tuple[float, float]
    explained: str


@dataclass
class QualityReport:
    """Every figure of one run; :meth:`to_json` is what ``quality.json`` holds."""

    figures: dict[str, Any]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    worst: list[_Case] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.figures, "per_image": self.per_image}


def assess(
    maps: Iterable[ImageMaps],
    *,
    weight: np.ndarray,
    classes: Sequence[str],
    labels: Mapping[int, Sequence[UnitLabel]],
    rankings: Mapping[str, Any],
    score_rule: str,
    dataset: Mapping[str, Any],
    patch_cells: int = 1,
    bars: Mapping[str, tuple[str, float]] | None = None,
    worst_cases: int = 8,
) -> QualityReport:
    """Score every image of ``maps`` (the FCN's outputs, :func:`training.ranking.fcn_maps`); see the module docstring."""
    classes = list(classes)
    background = classes.index(BACKGROUND_CLASS) if BACKGROUND_CLASS in classes else None
    truth: list[str] = []
    scores: list[np.ndarray] = []
    probs: list[np.ndarray] = []
    predicted: list[str] = []
    pointing: list[tuple[bool, float]] = []
    offsets: list[tuple[float, float]] = []
    named: list[bool] = []
    outside: dict[str, float] = {c: 0.0 for i, c in enumerate(classes) if i != background}
    normal_images = 0
    per_concept: dict[str, _Tally] = {}
    per_category: dict[str, _Tally] = {}
    per_image: list[dict[str, Any]] = []
    misses: list[tuple[float, _Case]] = []
    tolerance_px: list[float] = []
    for item in maps:
        record = item.record
        mapping = GridMapping.for_input(image_shape=item.pixels.shape, input_shape=item.input_shape)
        cells = breast_cells(item.gray, mapping.grid_shape)
        prob_maps = softmax(item.logits, axis=0)
        score = image_scores(prob_maps, item.logits, cells, classes=classes, rule=score_rule, patch_cells=patch_cells)
        label = record.pathology
        truth.append(label)
        scores.append(score)
        probs.append(classifier_probabilities(item.logits))
        predicted.append(classes[int(np.argmax(score))])
        row: dict[str, Any] = {
            "image_id": record.image_id,
            "pathology": label,
            "predicted": predicted[-1],
            "scores": {c: round(float(s), 4) for c, s in zip(classes, score)},
        }
        if label == BACKGROUND_CLASS:
            normal_images += 1
            if (~cells).any():
                for c in outside:
                    outside[c] = max(outside[c], float(prob_maps[classes.index(c)][~cells].max()))
        else:
            c = classes.index(label)
            findings = [f for f in record.lesions if f.pathology == label]
            masks = [m for (pathology, m) in load_lesion_masks(record, item.pixels.shape) if pathology == label]
            lesion = np.logical_or.reduce(masks)
            distance = ndimage.distance_transform_edt(~lesion)
            tolerance = tolerance_image_px(mapping)
            tolerance_px.append(tolerance)
            cam = class_activation_map(item.features, weight, c)
            hit, chance = pointing_hit(cam, mapping, distance, tolerance)
            pointing.append((hit, chance))
            peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
            offset = peak_offset(mapping.centre(*peak), masks, mapping)
            if not np.isnan(offset[0]):
                offsets.append(offset)
            units = named_units(influence(item.features, weight)[c], labels)
            concepts = {f.concept for f in findings}
            categories = {f.lexicon for f in findings}
            is_named = any(names_finding(labels[k], concepts, categories) for k in units)
            named.append(is_named)
            right = predicted[-1] == label
            for f in findings:
                per_concept.setdefault(f.concept, _Tally()).add(hit=hit, named=is_named, right=right)
            for cat in categories:
                per_category.setdefault(cat, _Tally()).add(hit=hit, named=is_named, right=right)
            row.update(
                pointing_hit=hit,
                pointing_chance=round(chance, 4),
                concepts=sorted(concepts),
                named_units=[{"unit_id": k, "labels": [x.label for x in labels[k]]} for k in units],
                concept_named=is_named,
            )
            if not hit or not is_named:
                # Worst first: how far the peak is from the lesion, in cells.
                py, px = mapping.centre(*peak)
                far = float(distance[int(np.clip(round(py), 0, distance.shape[0] - 1)),
                                     int(np.clip(round(px), 0, distance.shape[1] - 1))])
                misses.append((far, _Case(record.image_id, item.pixels, mapping, cam, lesion, (py, px), label)))
                misses.sort(key=lambda m: -m[0])
                del misses[worst_cases:]
        per_image.append(row)

    score_arr = np.stack(scores) if scores else np.zeros((0, len(classes)))
    prob_arr = np.stack(probs) if probs else np.zeros((0, len(classes)))
    lesion_idx = [i for i, t in enumerate(truth) if t != BACKGROUND_CLASS]
    normal_idx = [i for i, t in enumerate(truth) if t == BACKGROUND_CLASS]
    ranked = _ranked_units_named(rankings, labels, classes, lesion_concepts=set(per_concept), lesion_categories=set(per_category))
    figures: dict[str, Any] = {
        "dataset": dict(dataset),
        "images": len(truth),
        "lesion_images": len(lesion_idx),
        "normal_images": len(normal_idx),
        "image_score_rule": score_rule,
        "auc": {
            "score": one_vs_rest_auc(truth, score_arr, classes),
            "classifier_probability": one_vs_rest_auc(truth, prob_arr, classes),
            # Lesion images only: how well the score tells one lesion class from the others (benign from
            # malignant), which the AUCs over every image mix with lesion against normal.
            "score_among_lesion_images": {
                c: v for c, v in one_vs_rest_auc([truth[i] for i in lesion_idx], score_arr[lesion_idx], classes).items()
                if c != BACKGROUND_CLASS
            },
        },
        "predicted": {
            "lesion_images_correct": _share(predicted[i] == truth[i] for i in lesion_idx),
            "normal_images_correct": _share(predicted[i] == truth[i] for i in normal_idx),
            "confusion": {t: {p: sum(1 for a, b in zip(truth, predicted) if a == t and b == p) for p in classes}
                          for t in classes},
        },
        "pointing_game": {
            "definition": "the centre of the CAM's global-maximum cell (true class) lies on a lesion of that class or "
            f"within {POINTING_TOLERANCE_INPUT_PX:g} network-input pixels of one; chance = share of cells whose "
            "centre would hit",
            "images": len(pointing),
            "hit_rate": _share(h for h, _ in pointing),
            "chance_rate": float(np.mean([c for _, c in pointing])) if pointing else None,
            "tolerance_input_px": POINTING_TOLERANCE_INPUT_PX,
            "tolerance_image_px": round(float(np.mean(tolerance_px)), 2) if tolerance_px else None,
            # A systematic offset (the CAM leaning one way) shows here before it shows as misses.
            "peak_offset_input_px": {
                "definition": "median over lesion images of the CAM peak cell's centre minus the centre of the "
                "nearest lesion of the true class, in network-input pixels (down, right)",
                "down": round(float(np.median([o[0] for o in offsets])), 1) + 0.0 if offsets else None,  # no -0.0
                "right": round(float(np.median([o[1] for o in offsets])), 1) + 0.0 if offsets else None,
            },
        },
        "concept_naming": {
            "definition": f"one of the first {NAMED_UNITS} named units among the top {TOP_UNITS} (influence, true "
            "class) carries a label naming one of the image's lesion concepts of that class or its BI-RADS category",
            "images": len(named),
            "named_rate": _share(named),
            **ranked,
        },
        "background": {
            "definition": "on normal images, the largest probability of each lesion class on cells outside the breast",
            "images": normal_images,
            "max_probability": outside,
        },
        "per_concept": {k: v.to_json() for k, v in sorted(per_concept.items())},
        "per_category": {k: v.to_json() for k, v in sorted(per_category.items())},
    }
    if bars is not None:
        figures["bars"] = check_bars(figures, bars)
    return QualityReport(figures=figures, per_image=per_image, worst=[case for _, case in misses])


def _share(values: Iterable[bool]) -> float | None:
    items = list(values)
    return sum(items) / len(items) if items else None


def _ranked_units_named(
    rankings: Mapping[str, Any],
    labels: Mapping[int, Sequence[UnitLabel]],
    classes: Sequence[str],
    *,
    lesion_concepts: set[str],
    lesion_categories: set[str],
) -> dict[str, Any]:
    per_class = rankings.get("per_class", {})
    units = {c: [int(u["unit_id"]) for u in per_class.get(c, {}).get("units", [])] for c in classes}
    every = sorted({u for us in units.values() for u in us})
    lesion_units = [u for c in classes if c != BACKGROUND_CLASS for u in units[c]]
    by_lesion = [u for u in lesion_units if names_finding(labels.get(u, ()), lesion_concepts, lesion_categories)]
    return {
        "ranked_units": len(every),
        "ranked_units_named": _share(u in labels for u in every),
        "lesion_ranked_units": len(lesion_units),
        "lesion_ranked_units_named_by_lesion_concept": _share(u in by_lesion for u in lesion_units),
    }


def headline(figures: Mapping[str, Any]) -> dict[str, float | None]:
    """The report's figures that the bars are set on, by bar name."""
    auc = figures["auc"]["score"]
    background = figures["background"]["max_probability"]
    return {
        "auc_malignant": auc.get("malignant"),
        "auc_benign": auc.get("benign"),
        "lesion_images_predicted_correctly": figures["predicted"]["lesion_images_correct"],
        "normal_images_predicted_normal": figures["predicted"]["normal_images_correct"],
        "pointing_game": figures["pointing_game"]["hit_rate"],
        "concept_named": figures["concept_naming"]["named_rate"],
        "background_max_lesion_probability": max(background.values()) if background else None,
        "lesion_ranked_units_named_by_lesion_concept": figures["concept_naming"][
            "lesion_ranked_units_named_by_lesion_concept"
        ],
    }


def check_bars(figures: Mapping[str, Any], bars: Mapping[str, tuple[str, float]]) -> dict[str, Any]:
    """Each bar with its figure and whether it passes (a missing figure fails)."""
    values = headline(figures)
    out = {}
    for name, (op, bar) in bars.items():
        value = values.get(name)
        ok = value is not None and (value >= bar if op == ">=" else value <= bar)
        out[name] = {"value": value, "bar": f"{op} {bar:g}", "pass": bool(ok)}
    return out
