"""Test-set evaluation: one-vs-rest ROC AUC and pAUC at TPR ≥ 0.8 per class (DESIGN.md §1)."""

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
    auxiliary features ``(N, J)``, or context-crop cells ``(N, g, g)``).
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


def partial_auc_high_tpr(fpr: np.ndarray, tpr: np.ndarray, min_tpr: float = 0.8) -> float:
    """Area under the ROC curve over the part where TPR ≥ ``min_tpr``.

    ``pAUC = ∫_{min_tpr}^{1} (1 - FPR(t)) dt``, the ROC curve taken as the
    polyline through its operating points; at most ``1 - min_tpr`` (0.2).
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
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
    """Per-class ROC AUC and pAUC@TPR0.8 (None where the test set lacks positives or negatives)."""
    auc: dict[str, float | None] = {}
    pauc: dict[str, float | None] = {}
    positives: dict[str, int] = {}
    for c, name in enumerate(classes):
        y = (labels == c).astype(int)
        positives[name] = int(y.sum())
        if y.min() == y.max():
            auc[name] = pauc[name] = None
            continue
        auc[name] = float(roc_auc_score(y, probs[:, c]))
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        pauc[name] = float(partial_auc_high_tpr(fpr, tpr))
    defined = [v for v in auc.values() if v is not None]
    return {
        "auc": auc,
        "pauc_tpr0.8": pauc,
        "mean_auc": float(np.mean(defined)) if defined else None,
        "positives": positives,
        "n": int(len(labels)),
    }


def plot_roc(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: Path, *, title: str) -> None:
    """One-vs-rest ROC curves of every class, with the TPR = 0.8 line, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for c, name in enumerate(classes):
        y = (labels == c).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, _ = roc_curve(y, probs[:, c])
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, probs[:, c]):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.axhline(0.8, color="grey", linestyle="--", linewidth=1, label="TPR 0.8 (pAUC region above)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
