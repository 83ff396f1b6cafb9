"""The method's formulas, in one place (DESIGN.md §2–4).

Every function here is pure NumPy so the service can use it without torch.
Shapes follow one convention: ``features`` is ``(K, h, w)`` — the layer4
activations A_k(x, y) of K units on an h×w grid — and ``weights`` is ``(C, K)``,
the classifier's class weights w_ck (the FCN's 1×1 convolution).
Unit ids are 0-based indices into K everywhere.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]


def _check_features(features: np.ndarray, weights: np.ndarray) -> None:
    if features.ndim != 3:
        raise ValueError(f"features must be (K, h, w), got shape {features.shape}")
    if weights.ndim != 2 or weights.shape[1] != features.shape[0]:
        raise ValueError(
            f"weights must be (C, K) with K={features.shape[0]}, got shape {weights.shape}"
        )


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax: ``exp(z_c - max z) / Σ_c' exp(z_c' - max z)`` along ``axis``."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def class_activation_map(features: np.ndarray, weights: np.ndarray, class_index: int) -> np.ndarray:
    """CAM of class c (Zhou et al. 2016): ``CAM_c(x, y) = Σ_k w_ck · A_k(x, y)``.

    Returns an ``(h, w)`` float32 map. It equals the FCN's logit map of class c
    minus the class bias, which the tests check.
    """
    _check_features(features, weights)
    if not 0 <= class_index < weights.shape[0]:
        raise ValueError(f"class_index must be in [0, {weights.shape[0]}), got {class_index}")
    k, h, w = features.shape
    cam = weights[class_index].astype(np.float32) @ features.reshape(k, h * w).astype(np.float32, copy=False)
    return cam.reshape(h, w)


def auxiliary_term(values: np.ndarray, mean: np.ndarray, std: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per-class term of the auxiliary features: ``Σ_j v_cj z_j`` with ``z_j = (a_j - mean_j) / std_j``.

    ``values`` are the raw ``a`` ``(J,)``, ``weight`` is V ``(C, J)``; returns
    ``(C,)`` float32. The FCN adds it to every location of class c's logit map,
    so ``logits_c(x, y) = CAM_c(x, y) + b_c + auxiliary_term_c``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or weight.ndim != 2 or weight.shape[1] != values.shape[0]:
        raise ValueError(f"values must be (J,) and weight (C, J), got shapes {values.shape} and {weight.shape}")
    if mean.shape != values.shape or std.shape != values.shape:
        raise ValueError(f"mean and std must be (J,) = {values.shape}, got {mean.shape} and {std.shape}")
    z = (values - mean) / std
    return (weight.astype(np.float64) @ z).astype(np.float32)


def unit_max_activations(features: np.ndarray) -> np.ndarray:
    """``max_xy A_k(x, y)`` for every unit: one vectorised spatial max, shape ``(K,)``."""
    if features.ndim != 3:
        raise ValueError(f"features must be (K, h, w), got shape {features.shape}")
    return features.reshape(features.shape[0], -1).max(axis=1)


def influence(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Influence of unit k on class c: ``I_ck = max_xy A_k(x, y) · w_ck``; shape ``(C, K)``."""
    _check_features(features, weights)
    return weights * unit_max_activations(features)[None, :]


def top_units(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest ``scores`` (1-D), largest first.

    Ties go to the lower unit id, so rankings are deterministic.
    """
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {scores.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, scores.shape[0])
    # lexsort sorts by the last key first: descending score, then ascending id.
    order = np.lexsort((np.arange(scores.shape[0]), -scores))
    return order[:k]


def most_frequent_units(counts: np.ndarray, influence_sum: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` units that appear most often in the per-image top lists of one class.

    ``counts[k]``: how many images had unit k in their top list; ties go to the
    larger summed influence, then to the lower unit id. Units that never
    appeared are not returned.
    """
    order = np.lexsort((np.arange(counts.shape[0]), -influence_sum, -counts))
    order = order[counts[order] > 0]
    return order[:n]


def coverage(slot_counts: np.ndarray, selected: np.ndarray, slots_total: int) -> float:
    """Share of all per-image top-n slots filled by the ``selected`` units.

    ``slot_counts[k]`` is how many per-image top-n lists unit k appeared in;
    ``slots_total`` is n × number of images. Coverage = Σ_{k∈selected} count_k / slots_total.
    """
    if slots_total <= 0:
        raise ValueError(f"slots_total must be positive, got {slots_total}")
    return float(slot_counts[selected].sum()) / float(slots_total)


def binarise(activation_map: np.ndarray, threshold: float) -> np.ndarray:
    """Lu & Perer's unit mask: the pixels where the unit's (upsampled) map exceeds its threshold."""
    return activation_map > threshold


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks: ``|a ∧ b| / |a ∨ b|`` (0 when both are empty)."""
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    a = a.astype(bool, copy=False)
    b = b.astype(bool, copy=False)
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 0.0
    return float(np.logical_and(a, b).sum()) / float(union)


class TopQuantile:
    """Exact upper quantile of each unit's activations over a data set, streamed.

    The threshold of unit k is the smallest of its top ``m = ceil((1 - q) · N)``
    activation values, where N is the number of activations per unit in the
    whole data set: the value that at most ``(1 - q) · N`` activations exceed
    (q = 0.99 gives Lu & Perer's 99th percentile). N must be known up front —
    a top set chosen on part of the data can drop values a larger top set needs
    later — and only the top m values per unit are kept, so memory is
    ``(1 - q)`` of the data.
    """

    def __init__(self, num_units: int, *, total: int, q: float = 0.99) -> None:
        if not 0.0 < q < 1.0:
            raise ValueError(f"q must be in (0, 1), got {q}")
        if total < 1:
            raise ValueError(f"total must be >= 1, got {total}")
        self.q = q
        self.total = total
        self.count = 0
        # The small epsilon keeps float error ((1 - 0.99) · 1000 = 10.000000000000009) from adding one.
        self._keep = max(1, math.ceil((1.0 - q) * total - 1e-9))
        self._top = np.empty((num_units, 0), dtype=np.float32)

    def update(self, features: np.ndarray) -> None:
        """Add one image's ``(K, h, w)`` activations."""
        flat = features.reshape(features.shape[0], -1).astype(np.float32, copy=False)
        if self.count + flat.shape[1] > self.total:
            raise ValueError(
                f"more activations than the declared total {self.total}: "
                f"got {self.count + flat.shape[1]}"
            )
        self.count += flat.shape[1]
        merged = np.concatenate([self._top, flat], axis=1)
        if merged.shape[1] > self._keep:
            merged = np.partition(merged, merged.shape[1] - self._keep, axis=1)[:, -self._keep :]
        self._top = merged

    def thresholds(self) -> np.ndarray:
        """Per-unit thresholds, shape ``(K,)``; all ``total`` activations must have been added."""
        if self.count != self.total:
            raise ValueError(f"expected {self.total} activations per unit, got {self.count}")
        return self._top.min(axis=1)
