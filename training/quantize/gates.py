"""The int8 model's accuracy gates: how far its explanations are from the fp32 model's on the same images.

Each figure compares the two models' outputs for the same test mammograms, and
every figure comes from the code that makes it elsewhere: image scores and the
pointing game from the explanation-quality report (:func:`training.quality.assess`,
which scores images by :mod:`deepminer.scoring`), influence, top units and CAM
from :mod:`deepminer.formulas`.

- ``auc_delta``: per class, ``|AUC_int8 − AUC_fp32|`` of the image-level score;
  the gate takes the worst class.
- ``top5_units_shared``: per image and class, how many of the 5 most influential
  units the two models share; the median over images, worst class.
- ``cam_pearson``: per image and class, the Pearson correlation of the two CAMs
  over the grid; the median over images, worst class.
- ``pointing_game_delta_points``: ``|hit rate_int8 − hit rate_fp32|`` of the
  quality report's pointing game, in percentage points.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from deepminer.formulas import class_activation_map, influence, top_units
from training.quality import UnitLabel, assess
from training.ranking import ImageMaps

TOP_K = 5
GATE_BOUNDS: dict[str, tuple[str, float]] = {
    "auc_delta": ("<=", 0.005),
    "top5_units_shared": (">=", 4),
    "cam_pearson": (">=", 0.99),
    "pointing_game_delta_points": ("<=", 2.0),
}
"""Each gate's figure must satisfy ``figure <op> bound`` (issue 16)."""


def units_shared(scores: np.ndarray, reference: np.ndarray, k: int = TOP_K) -> int:
    """How many of the ``k`` top units of ``scores`` (one class's influence, ``(K,)``) are among ``reference``'s."""
    return len(set(top_units(scores, k).tolist()) & set(top_units(reference, k).tolist()))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two same-shape maps over their cells: ``cov(a, b) / (σ_a σ_b)``.

    A constant map has no correlation to speak of: 1.0 when the other map is
    the same constant, else 0.0.
    """
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same shape, got {a.shape} and {b.shape}")
    x = a.astype(np.float64).ravel() - a.mean(dtype=np.float64)
    y = b.astype(np.float64).ravel() - b.mean(dtype=np.float64)
    norm = float(np.sqrt((x @ x) * (y @ y)))
    if norm == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(x @ y) / norm


def paired_figures(
    candidate: Sequence[ImageMaps], reference: Sequence[ImageMaps], *, weight: np.ndarray, classes: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    """Per class, each image's top-5 units shared and CAM Pearson, candidate against reference.

    Both hold the same images in the same order.
    """
    if [m.record.image_id for m in candidate] != [m.record.image_id for m in reference]:
        raise ValueError("candidate and reference maps must be of the same images in the same order")
    shared: dict[str, list[float]] = {c: [] for c in classes}
    correlation: dict[str, list[float]] = {c: [] for c in classes}
    for got, want in zip(candidate, reference):
        scores, scores_ref = influence(got.features, weight), influence(want.features, weight)
        for c, name in enumerate(classes):
            shared[name].append(units_shared(scores[c], scores_ref[c]))
            correlation[name].append(
                pearson(class_activation_map(got.features, weight, c), class_activation_map(want.features, weight, c))
            )
    return {"top5_units_shared": shared, "cam_pearson": correlation}


def check(value: float | None, op: str, bound: float) -> dict[str, Any]:
    """One gate: its figure, its bound as text, and whether it holds (None when the figure could not be measured)."""
    holds = None if value is None else bool(value >= bound if op == ">=" else value <= bound)
    return {"value": value, "bound": f"{op} {bound:g}", "pass": holds}


def gate_checks(figures: Mapping[str, Any], bounds: Mapping[str, tuple[str, float]] = GATE_BOUNDS) -> dict[str, Any]:
    """Every gate of :func:`compare`'s ``figures``: the worst class's figure against its bound."""
    worst = {
        "auc_delta": _worst(figures["auc_delta"].values(), max),
        "top5_units_shared": _worst(figures["top5_units_shared_median"].values(), min),
        "cam_pearson": _worst(figures["cam_pearson_median"].values(), min),
        "pointing_game_delta_points": figures["pointing_game_delta_points"],
    }
    return {name: check(worst[name], *bounds[name]) for name in bounds}


def compare(
    candidate: Sequence[ImageMaps],
    reference: Sequence[ImageMaps],
    *,
    weight: np.ndarray,
    classes: Sequence[str],
    labels: Mapping[int, Sequence[UnitLabel]],
    rankings: Mapping[str, Any],
    score_rule: str,
    dataset: Mapping[str, Any],
    patch_cells: int = 1,
    bounds: Mapping[str, tuple[str, float]] = GATE_BOUNDS,
) -> dict[str, Any]:
    """The gates of ``candidate`` (the int8 model's maps) against ``reference`` (fp32's) on the same images.

    Returns ``{"images", "bounds", "figures", "checks", "pass"}``; ``pass`` is
    false when one measured gate fails (a gate that could not be measured, such
    as the AUC of a class absent from the images, neither passes nor fails).
    """
    report = {
        name: assess(maps, weight=weight, classes=classes, labels=labels, rankings=rankings, score_rule=score_rule,
                     patch_cells=patch_cells, dataset=dataset).figures
        for name, maps in (("candidate", candidate), ("reference", reference))
    }
    auc, auc_ref = report["candidate"]["auc"]["score"], report["reference"]["auc"]["score"]
    hits, hits_ref = (report[name]["pointing_game"]["hit_rate"] for name in ("candidate", "reference"))
    paired = paired_figures(candidate, reference, weight=weight, classes=classes)
    figures: dict[str, Any] = {
        "auc": {"int8": auc, "fp32": auc_ref},
        "auc_delta": {c: None if auc[c] is None or auc_ref[c] is None else abs(auc[c] - auc_ref[c]) for c in classes},
        "pointing_game": {"int8": hits, "fp32": hits_ref},
        "pointing_game_delta_points": None if hits is None or hits_ref is None else 100 * abs(hits - hits_ref),
        "top5_units_shared_median": {c: _median(v) for c, v in paired["top5_units_shared"].items()},
        "top5_units_shared_min": {c: min(v) if v else None for c, v in paired["top5_units_shared"].items()},
        "cam_pearson_median": {c: _median(v) for c, v in paired["cam_pearson"].items()},
        "cam_pearson_min": {c: min(v) if v else None for c, v in paired["cam_pearson"].items()},
    }
    checks = gate_checks(figures, bounds)
    return {
        "images": len(reference),
        "bounds": {name: f"{op} {bound:g}" for name, (op, bound) in bounds.items()},
        "figures": figures,
        "checks": checks,
        "pass": all(c["pass"] is not False for c in checks.values()),
    }


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def _worst(values: Any, pick: Any) -> float | None:
    measured = [v for v in values if v is not None]
    return pick(measured) if measured else None
