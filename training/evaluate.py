"""Test-set evaluation: one-vs-rest ROC AUC and pAUC at TPR ≥ 0.8 per class (DESIGN.md §1).

Two partial areas exist for the high-sensitivity end of a ROC curve, and the
metrics name them apart:

- ``pauc`` (:func:`partial_auc`), the paper's figure: the area under the ROC
  curve over the FPR range where TPR ≥ 0.8, times 0.2;
- ``band_area_tpr0.8`` (:func:`band_area_above_tpr`): the area between the
  line TPR = 0.8 and the curve, a different and smaller number.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from deepminer.imaging import normalise


def batch_input(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(N, P, P)`` patches in [0, 1] → normalised ``(N, 3, P, P)`` float32 tensor."""
    return torch.from_numpy(normalise(pixels.astype(np.float32), mean, std))


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    pixels: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    device: torch.device | None = None,
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """Class probabilities ``(N, C)`` of the patch classifier.

    ``extra``: the model's second input per patch, when it takes one (raw
    auxiliary features ``(N, J)``, or the patch cells of whole images, training/context.py).
    """
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(pixels), batch_size):
            x = batch_input(pixels[start : start + batch_size], mean, std).to(device)
            logits = model(x) if extra is None else model(x, torch.from_numpy(extra[start : start + batch_size]).to(device))
            out.append(torch.softmax(logits, dim=1).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


PAUC_MIN_TPR = 0.8
"""The TPR above which the paper's pAUC is taken."""


def _roc_points(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``fpr`` and ``tpr`` as float64 arrays, checked to be one ROC curve in ``roc_curve``'s order."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.ndim != 1 or fpr.shape != tpr.shape or fpr.size < 2:
        raise ValueError(f"fpr and tpr must be 1-D arrays of one length >= 2, got shapes {fpr.shape} and {tpr.shape}")
    if np.any(np.diff(fpr) < 0) or np.any(np.diff(tpr) < 0):
        raise ValueError("fpr and tpr must be non-decreasing (the order sklearn.metrics.roc_curve returns)")
    return fpr, tpr


def partial_auc(fpr: np.ndarray, tpr: np.ndarray, min_tpr: float = PAUC_MIN_TPR) -> float:
    """The paper's pAUC: the area under the ROC curve over the FPR range where TPR ≥ ``min_tpr``, × (1 - min_tpr).

    As the reference notebook ``training/plot_roc_curves_3class.ipynb``
    computes it: ``loc`` = number of operating points with TPR ≥ ``min_tpr``,
    then ``np.trapz(tpr[-loc:], fpr[-loc:]) * (1 - min_tpr)``. The points
    between are joined by straight lines and the curve is not cut at exactly
    ``min_tpr``. At most ``1 - min_tpr`` (0.2): a perfect classifier's points
    with TPR ≥ 0.8 span FPR 0 to 1 at TPR 1.
    """
    fpr, tpr = _roc_points(fpr, tpr)
    loc = int(np.count_nonzero(tpr >= min_tpr))
    # The curve is non-decreasing, so its last loc points are exactly those with TPR >= min_tpr.
    return float(np.trapezoid(tpr[-loc:], fpr[-loc:]) * (1.0 - min_tpr)) if loc else 0.0


def band_area_above_tpr(fpr: np.ndarray, tpr: np.ndarray, min_tpr: float = PAUC_MIN_TPR) -> float:
    """The area between the line TPR = ``min_tpr`` and the ROC curve (not the paper's pAUC: see :func:`partial_auc`).

    ``∫_{min_tpr}^{1} (1 - FPR(t)) dt``, the ROC curve taken as the polyline
    through its operating points and cut exactly at ``min_tpr``; at most
    ``1 - min_tpr`` (0.2).
    """
    fpr, tpr = _roc_points(fpr, tpr)
    area = 0.0
    for i in range(1, len(tpr)):
        t0, t1, f0, f1 = tpr[i - 1], tpr[i], fpr[i - 1], fpr[i]
        if t1 <= min_tpr or t1 == t0:
            continue
        if t0 < min_tpr:  # the segment crosses min_tpr: keep only its upper part
            f0 = f0 + (f1 - f0) * (min_tpr - t0) / (t1 - t0)
            t0 = min_tpr
        area += (t1 - t0) * (1.0 - (f0 + f1) / 2.0)
    return area


def one_vs_rest_metrics(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class ROC AUC, the paper's pAUC and the band area above TPR 0.8.

    Keys: ``auc``, ``pauc`` (:func:`partial_auc`), ``band_area_tpr0.8``
    (:func:`band_area_above_tpr`), each ``{class: value}`` with None where the
    test set lacks positives or negatives; ``pauc_min_tpr``, ``mean_auc``,
    ``positives`` and ``n``.
    """
    auc: dict[str, float | None] = {}
    pauc: dict[str, float | None] = {}
    band: dict[str, float | None] = {}
    positives: dict[str, int] = {}
    for c, name in enumerate(classes):
        y = (labels == c).astype(int)
        positives[name] = int(y.sum())
        if y.min() == y.max():
            auc[name] = pauc[name] = band[name] = None
            continue
        auc[name] = float(roc_auc_score(y, probs[:, c]))
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        pauc[name] = partial_auc(fpr, tpr)
        band[name] = band_area_above_tpr(fpr, tpr)
    defined = [v for v in auc.values() if v is not None]
    return {
        "auc": auc,
        "pauc": pauc,
        "pauc_min_tpr": PAUC_MIN_TPR,
        "band_area_tpr0.8": band,
        "mean_auc": float(np.mean(defined)) if defined else None,
        "positives": positives,
        "n": int(len(labels)),
    }


def plot_roc(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: Path, *, title: str) -> None:
    """One-vs-rest ROC curves of every class as a PNG, each with its AUC and pAUC, the pAUC area shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for c, name in enumerate(classes):
        y = (labels == c).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        (line,) = ax.plot(
            fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, probs[:, c]):.3f}, pAUC {partial_auc(fpr, tpr):.3f})"
        )
        high = tpr >= PAUC_MIN_TPR
        # pAUC is the area under these points (times 0.2), so that is the area shaded.
        ax.fill_between(fpr[high], tpr[high], color=line.get_color(), alpha=0.08, linewidth=0)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.axhline(PAUC_MIN_TPR, color="grey", linestyle="--", linewidth=1,
               label=f"TPR {PAUC_MIN_TPR:g}; pAUC = shaded area x {1 - PAUC_MIN_TPR:.1f}")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
