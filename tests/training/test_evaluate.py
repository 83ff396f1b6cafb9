"""AUC and pAUC at TPR ≥ 0.8, against hand-computed and brute-force values."""

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from training.evaluate import one_vs_rest_metrics, partial_auc_high_tpr


def brute_force_pauc(fpr, tpr, min_tpr=0.8, steps=200_001):
    # Integrate 1 - FPR(t) over t in [min_tpr, 1] on a fine grid.
    t = np.linspace(min_tpr, 1.0, steps)
    order = np.argsort(tpr, kind="stable")
    f = np.interp(t, np.asarray(tpr)[order], np.asarray(fpr)[order])
    return np.trapezoid(1 - f, t)


def test_perfect_and_chance_classifiers():
    assert partial_auc_high_tpr(np.array([0, 0, 1]), np.array([0, 1, 1])) == pytest.approx(0.2)
    # the diagonal: ∫_{0.8}^{1} (1 - t) dt = 0.02
    assert partial_auc_high_tpr(np.array([0, 1]), np.array([0, 1])) == pytest.approx(0.02)


def test_matches_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    scores = y * 0.8 + rng.standard_normal(500)
    fpr, tpr, _ = roc_curve(y, scores)
    assert partial_auc_high_tpr(fpr, tpr) == pytest.approx(brute_force_pauc(fpr, tpr), abs=1e-4)
    assert 0.02 < partial_auc_high_tpr(fpr, tpr) < 0.2


def test_one_vs_rest_metrics_handles_missing_classes():
    labels = np.array([0, 0, 1, 1, 0])
    probs = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.1, 0.9, 0], [0.3, 0.7, 0], [0.6, 0.4, 0]])
    m = one_vs_rest_metrics(labels, probs, ["normal", "benign", "malignant"])
    assert m["auc"]["normal"] == pytest.approx(1.0)
    assert m["pauc_tpr0.8"]["benign"] == pytest.approx(0.2)
    assert m["auc"]["malignant"] is None and m["positives"]["malignant"] == 0
    assert m["mean_auc"] == pytest.approx(1.0)
