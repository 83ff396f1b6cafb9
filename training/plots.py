"""Learning curves of a training run: train loss and hold-out mean AUC per epoch, as a PNG in the bundle."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

LEARNING_CURVES_FILE = "plots/learning_curves.png"


def plot_learning_curves(
    history: Sequence[dict[str, Any]], path: Path, *, title: str, best_epoch: int | None = None
) -> Path:
    """Plot ``history`` (``fine_tune``'s per-epoch records) to ``path``; returns ``path``.

    Train loss on the left axis, hold-out mean AUC on the right one (epochs
    without a defined AUC are left out), the selected epoch and step decays of
    the learning rate marked. Epochs are numbered from 1, as in the logs.
    """
    if not history:
        raise ValueError("no epochs to plot: the training history is empty")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) + 1 for r in history]
    fig, loss_ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        loss = [(e, r["train_loss"]) for e, r in zip(epochs, history) if r.get("train_loss") is not None]
        if loss:
            loss_ax.plot(*zip(*loss), marker="o", color="tab:blue", label="train loss")
        loss_ax.set(xlabel="epoch", ylabel="train loss (cross-entropy)", title=title)
        loss_ax.set_xticks(epochs)
        auc_ax = loss_ax.twinx()
        auc = [(e, r["holdout_mean_auc"]) for e, r in zip(epochs, history) if r.get("holdout_mean_auc") is not None]
        if auc:
            auc_ax.plot(*zip(*auc), marker="s", color="tab:orange", label="hold-out mean AUC")
        auc_ax.set(ylabel="hold-out mean one-vs-rest AUC", ylim=(0.0, 1.0))
        for prev, rec in pairwise(history):
            # Step decays are marked; a cosine schedule changes the rate at every step and is left to the config.
            if rec.get("lr") != prev.get("lr") and rec.get("lr_schedule", "step") == "step":
                loss_ax.axvline(int(rec["epoch"]) + 0.5, color="grey", linestyle=":", linewidth=1,
                                label=f"lr {prev.get('lr'):g} → {rec.get('lr'):g}")
        if best_epoch is not None and best_epoch >= 0:
            loss_ax.axvline(best_epoch + 1, color="tab:green", linestyle="--", linewidth=1, label="selected epoch")
        handles = loss_ax.get_legend_handles_labels()[0] + auc_ax.get_legend_handles_labels()[0]
        if handles:
            loss_ax.legend(handles=handles, loc="best", fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, metadata={"Software": None})
    finally:
        plt.close(fig)
    return path
