"""AUC, the paper's pAUC and the band area above TPR 0.8, against hand-computed and brute-force values."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from training.evaluate import band_area_above_tpr, one_vs_rest_metrics, partial_auc

# A hand-made ROC curve: the points with TPR >= 0.8 are (0.2, 0.8), (0.4, 0.9) and (1, 1).
HAND_FPR = np.array([0.0, 0.1, 0.2, 0.4, 1.0])
HAND_TPR = np.array([0.0, 0.5, 0.8, 0.9, 1.0])


def reference_pauc(fpr, tpr):
    # The reference notebook (training/plot_roc_curves_3class.ipynb), line for line.
    loc = len([t for t in tpr if t >= 0.8])
    return np.trapezoid(tpr[-loc:], fpr[-loc:]) * (1 - 0.8)


def brute_force_band(fpr, tpr, min_tpr=0.8, steps=200_001):
    # Integrate 1 - FPR(t) over t in [min_tpr, 1] on a fine grid.
    t = np.linspace(min_tpr, 1.0, steps)
    order = np.argsort(tpr, kind="stable")
    f = np.interp(t, np.asarray(tpr)[order], np.asarray(fpr)[order])
    return np.trapezoid(1 - f, t)


def test_pauc_is_the_reference_formula_on_a_hand_made_roc():
    # trapezoids (0.4 - 0.2) * (0.8 + 0.9) / 2 + (1 - 0.4) * (0.9 + 1) / 2 = 0.17 + 0.57, times 0.2
    assert partial_auc(HAND_FPR, HAND_TPR) == pytest.approx(0.148)
    assert partial_auc(HAND_FPR, HAND_TPR) == pytest.approx(reference_pauc(HAND_FPR, HAND_TPR))
    # the band between TPR 0.8 and the curve: 0.1 * (1 - 0.3) + 0.1 * (1 - 0.7)
    assert band_area_above_tpr(HAND_FPR, HAND_TPR) == pytest.approx(0.10)


def test_perfect_and_chance_classifiers():
    assert partial_auc(np.array([0, 0, 1]), np.array([0, 1, 1])) == pytest.approx(0.2)
    assert band_area_above_tpr(np.array([0, 0, 1]), np.array([0, 1, 1])) == pytest.approx(0.2)
    # the diagonal in steps of 0.1: pAUC 0.2 * ∫_{0.8}^{1} t dt = 0.036; band ∫_{0.8}^{1} (1 - t) dt = 0.02
    diagonal = np.arange(11) / 10
    assert partial_auc(diagonal, diagonal) == pytest.approx(0.036)
    assert band_area_above_tpr(diagonal, diagonal) == pytest.approx(0.02)
    # the reference does not cut the curve at TPR 0.8: with only its end points, one point is left, area 0
    assert partial_auc(np.array([0, 1]), np.array([0, 1])) == 0.0


def test_both_areas_on_random_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    scores = y * 0.8 + rng.standard_normal(500)
    fpr, tpr, _ = roc_curve(y, scores)
    assert partial_auc(fpr, tpr) == pytest.approx(reference_pauc(fpr, tpr), rel=1e-12)
    assert band_area_above_tpr(fpr, tpr) == pytest.approx(brute_force_band(fpr, tpr), abs=1e-4)
    assert 0.02 < band_area_above_tpr(fpr, tpr) < partial_auc(fpr, tpr) < 0.2


def test_a_curve_out_of_order_is_refused():
    with pytest.raises(ValueError, match="non-decreasing"):
        partial_auc(np.array([0, 0.5, 0.4, 1]), np.array([0, 0.6, 0.8, 1]))
    with pytest.raises(ValueError, match=r"got shapes \(3,\) and \(2,\)"):
        band_area_above_tpr(np.array([0, 0.5, 1]), np.array([0, 1]))


def test_one_vs_rest_metrics_handles_missing_classes():
    labels = np.array([0, 0, 1, 1, 0])
    probs = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.1, 0.9, 0], [0.3, 0.7, 0], [0.6, 0.4, 0]])
    m = one_vs_rest_metrics(labels, probs, ["normal", "benign", "malignant"])
    assert m["auc"]["normal"] == pytest.approx(1.0)
    assert m["pauc"]["benign"] == pytest.approx(0.2) and m["band_area_tpr0.8"]["benign"] == pytest.approx(0.2)
    assert m["pauc_min_tpr"] == 0.8
    assert m["auc"]["malignant"] is None and m["pauc"]["malignant"] is None and m["positives"]["malignant"] == 0
    assert m["mean_auc"] == pytest.approx(1.0)
