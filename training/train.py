"""Fine-tuning the patch classifier with the paper's SGD settings (DESIGN.md §1)."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD
from training.config import TrainConfig
from training.data import PatchSet
from training.evaluate import batch_input, one_vs_rest_metrics, predict
from training.patches import CLASSES

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The selected model and how training went, epoch by epoch."""

    model: nn.Module
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)


def learning_rate(config: TrainConfig, epoch: int) -> float:
    """Step schedule: ``lr`` until ``lr_decay_epoch`` (0-based), then ``lr × lr_decay_factor``."""
    if config.lr_decay_epoch is not None and epoch >= config.lr_decay_epoch:
        return config.lr * config.lr_decay_factor
    return config.lr


def epoch_order(
    labels: np.ndarray, *, balance: bool, rng: np.random.Generator, samples: int | None = None
) -> np.ndarray:
    """Sample indices for one epoch: ``samples`` of them, default as many as there are patches.

    Balanced: every class is drawn equally often (with replacement), so rare
    lesion classes are seen as often as normal tissue.
    """
    n = samples or len(labels)
    if not balance:
        order = rng.permutation(len(labels))
        return np.resize(order, n) if n != len(labels) else order
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    present = counts > 0
    weights = np.where(present[labels], 1.0 / counts[labels], 0.0)
    return rng.choice(len(labels), size=n, replace=True, p=weights / weights.sum())


def fine_tune(
    model: nn.Module,
    train: PatchSet,
    holdout: PatchSet,
    config: TrainConfig,
    *,
    device: torch.device,
    progress: bool = True,
) -> TrainResult:
    """Train all weights with SGD; keep the epoch with the best hold-out mean AUC (model selection)."""
    if len(train) == 0:
        raise ValueError("no training patches: check the patch rule and the manifest")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model.to(device)
    optimiser = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    best_score, best_epoch, best_state = -np.inf, -1, None
    history: list[dict[str, Any]] = []
    started = time.perf_counter()
    for epoch in range(config.epochs):
        lr = learning_rate(config, epoch)
        for group in optimiser.param_groups:
            group["lr"] = lr
        order = epoch_order(
            train.labels, balance=config.balance_classes, rng=rng, samples=config.samples_per_epoch
        )
        model.train()
        t0 = time.perf_counter()
        losses = []
        batches = range(0, len(order), config.batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress, leave=False)
        for start in bar:
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:  # BatchNorm needs more than one sample per batch
                continue
            pixels = train.pixels[idx].astype(np.float32)
            if config.augment_flips:
                flip_h = rng.random(len(idx)) < 0.5
                flip_v = rng.random(len(idx)) < 0.5
                pixels[flip_h] = pixels[flip_h, :, ::-1]
                pixels[flip_v] = pixels[flip_v, ::-1, :]
            x = batch_input(np.ascontiguousarray(pixels), mean, std).to(device)
            y = torch.from_numpy(train.labels[idx]).to(device)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        train_seconds = time.perf_counter() - t0
        probs = predict(model, holdout.pixels, mean=mean, std=std, batch_size=config.eval_batch_size, device=device)
        metrics = one_vs_rest_metrics(holdout.labels, probs, CLASSES) if len(holdout) else {"mean_auc": None}
        score = metrics["mean_auc"] if metrics["mean_auc"] is not None else -float(np.mean(losses))
        elapsed = time.perf_counter() - started
        record = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": float(np.mean(losses)) if losses else None,
            "holdout_mean_auc": metrics["mean_auc"],
            "holdout_auc": metrics.get("auc"),
            "seconds": round(train_seconds, 2),
            "patches_per_second": round(len(order) / train_seconds, 1) if train_seconds > 0 else None,
        }
        history.append(record)
        eta = elapsed / (epoch + 1) * (config.epochs - epoch - 1)
        log.info(
            "epoch %d/%d: loss %.4f, hold-out mean AUC %s, %.0f patches/s, ETA %.0f s",
            epoch + 1, config.epochs, record["train_loss"] or float("nan"),
            f"{metrics['mean_auc']:.3f}" if metrics["mean_auc"] is not None else "n/a",
            record["patches_per_second"] or 0.0, eta,
        )
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model=model, best_epoch=best_epoch, history=history)
