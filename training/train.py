"""Fine-tuning the patch classifier with the paper's SGD settings (DESIGN.md §1)."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD
from training.batches import image_batches, patch_batches
from training.checkpoint import Checkpoint, load_checkpoint, rng_states, save_checkpoint
from training.config import TrainConfig
from training.context import NORMAL, PatchesInImage
from training.data import PatchSet
from training.distributed import DistContext
from training.evaluate import batch_input, one_vs_rest_metrics, predict
from training.patches import CLASSES

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The selected model and how training went, epoch by epoch."""

    model: nn.Module
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)


def training_precision(config: TrainConfig, device: torch.device) -> str:
    """``fp32`` or ``bf16``: what ``config.train_precision`` gives on ``device``.

    ``auto`` is bf16 where the hardware computes it natively (CUDA with bf16
    support, or a CPU with AVX-512 BF16 or AMX; about twice as fast there),
    else fp32; ``bf16`` asks for it anywhere; ``fp32`` never uses it.
    """
    if config.train_precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"train_precision must be fp32, bf16 or auto, got {config.train_precision!r}")
    if config.train_precision != "auto":
        return config.train_precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bf16" if native else "fp32"


def learning_rate(config: TrainConfig, progress: float) -> float:
    """The learning rate after ``progress`` epochs (0-based and fractional: 2.5 is halfway through the third).

    ``step``: ``lr`` until epoch ``lr_decay_epoch``, then ``lr × lr_decay_factor``.
    ``cosine``: ``lr × (1 + cos(π progress / epochs)) / 2``.
    """
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress / config.epochs, 1.0)))
    if config.lr_decay_epoch is not None and math.floor(progress) >= config.lr_decay_epoch:
        return config.lr * config.lr_decay_factor
    return config.lr


def make_optimiser(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """``config.optimiser`` over every weight of ``model``: the paper's SGD with momentum, or AdamW."""
    if config.optimiser == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def train_step(
    net: nn.Module,
    optimiser: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    global_batch: int,
    world_size: int = 1,
    extra: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    bf16: bool = False,
    lesion_max: bool = False,
    more: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = (),
    lesion_pair_weight: float = 0.0,
) -> float:
    """One SGD step on this rank's part ``(x, y)`` of a global batch of ``global_batch`` patches.

    ``extra``: the model's second input for the part, when it takes one: raw
    auxiliary features ``(n, J)``, or the patch cells of whole images ``(n, P, h, w)``
    (:class:`training.context.PatchesInImage`, whose logits ``(n, P, C)`` go
    with labels ``(n, P)``, -100 on padding). ``class_weight``: per-class loss
    weights; ``global_batch`` is then the summed weight of the global batch's patches.
    ``bf16``: the forward pass under bfloat16 autocast (weights, gradients and the loss stay float32).
    ``lesion_max``: patches of a lesion class (label > 0) are pooled by their cells' largest logit per class.
    ``more``: further ``(x, y, extra)`` parts of the batch, of other sizes (lesion crops): one forward pass
    classifies them with ``(x, y, extra)``, in one BatchNorm batch (:func:`training.batchnorm.forward_together`);
    ``global_batch`` counts their patches too.
    ``lesion_pair_weight``: adds that many times :func:`lesion_pair_loss` (``TrainConfig.lesion_pair_weight``).

    The local loss is ``world_size · Σ_local CE / global_batch``: DDP averages
    gradients over ranks, so the step follows the gradient of the mean
    cross-entropy over the whole global batch, however it is split. Returns
    this rank's share of that mean (the shares sum to the global batch loss).
    """
    optimiser.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        if more:
            if extra is None or any(part[2] is None for part in more):
                raise ValueError("inputs classified together are patches in their images: each needs its cells")
            ys = [y, *(part[1] for part in more)]
            maxes = [(t > 0) & (t != -100) if lesion_max else None for t in ys]
            outputs = net([x, *(part[0] for part in more)], [extra, *(part[2] for part in more)], maxes)
            logits = torch.cat([out.float().reshape(-1, out.shape[-1]) for out in outputs])
            y = torch.cat([t.reshape(-1) for t in ys])
        elif extra is None:
            logits = net(x)
        elif lesion_max:
            logits = net(x, extra, (y > 0) & (y != -100))
        else:
            logits = net(x, extra)
    logits = logits.float()
    loss_sum = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), y.reshape(-1), weight=class_weight, reduction="sum"
    )
    if lesion_pair_weight:
        loss_sum = loss_sum + lesion_pair_weight * lesion_pair_loss(logits, y, class_weight)
    (loss_sum * (world_size / global_batch)).backward()
    optimiser.step()
    return float(loss_sum.detach()) / global_batch


LESION_CLASSES = tuple(i for i in range(len(CLASSES)) if i != NORMAL)


def lesion_pair_loss(logits: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None) -> torch.Tensor:
    """Summed cross-entropy of every lesion patch's class among the lesion classes alone (benign against
    malignant): ``-log softmax(logits[lesion classes])[label]``, weighted by ``class_weight`` of its label.

    Normal's logit takes no part, so the term asks which lesion a patch holds without pushing lesions against
    normal tissue. ``logits`` ``(..., C)``; labels ``y`` of the same leading shape (-100: padding).
    """
    flat, labels = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
    columns = torch.tensor(LESION_CLASSES, device=logits.device)
    lesion = torch.isin(labels, columns)
    if not bool(lesion.any()):
        return logits.sum() * 0.0
    target = torch.searchsorted(columns, labels[lesion])
    weight = None if class_weight is None else class_weight[columns]
    return nn.functional.cross_entropy(flat[lesion][:, columns], target, weight=weight, reduction="sum")


def fine_tune(
    model: nn.Module,
    train: PatchSet,
    holdout: PatchSet,
    config: TrainConfig,
    *,
    device: torch.device,
    progress: bool = True,
    dist: DistContext | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train all weights with SGD (or AdamW, ``config.optimiser``); keep the last epoch, or the one with the best hold-out mean AUC
    (``config.select_epoch``).

    ``dist``: the torchrun job this process belongs to (default: single
    process). Every rank draws the same epoch order and trains on its slice of
    each global batch of ``config.batch_size``; hold-out predictions are
    sharded and gathered, so every rank selects the same epoch.

    ``checkpoint_dir``: write a checkpoint there after every epoch (rank 0).
    ``resume``: continue from that checkpoint when there is one; the result is
    the same as an uninterrupted run.
    """
    if len(train) == 0:
        raise ValueError("no training patches: check the patch rule and the manifest")
    ctx = dist or DistContext.single(device)
    if config.batch_size < max(2, ctx.world_size):
        raise ValueError(
            f"batch_size must be at least 2 and at least the number of processes ({ctx.world_size}), "
            f"got {config.batch_size}"
        )
    if resume and checkpoint_dir is None:
        raise ValueError("resume needs a checkpoint directory")
    if config.lesion_crops and ctx.is_distributed:
        # Images and crops share one BatchNorm batch within a process (training/batchnorm.py); across ranks that
        # batch would need CrossProcessBatchNorm's summed statistics, which forward_together does not take yet.
        raise ValueError("lesion_crops trains in one process only for now: run without torchrun, or set "
                         "lesion_crops = 0")
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    # channels_last: 2.5-5x faster convolutions on CPU (oneDNN), faster on GPUs with tensor cores. Not under
    # DDP: SyncBatchNorm's channels_last kernels round differently from one process's BatchNorm.
    layout = torch.contiguous_format if ctx.is_distributed else torch.channels_last
    model.to(device=device, memory_format=layout)
    optimiser = make_optimiser(model, config)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    best_score, best_epoch, best_state = -np.inf, -1, None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    checkpoint = load_checkpoint(checkpoint_dir, config=config) if resume and checkpoint_dir else None
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model)
        optimiser.load_state_dict(checkpoint.optimiser)
        checkpoint.restore_rng(rng)
        history = list(checkpoint.history)
        best_score, best_epoch, best_state = checkpoint.best_score, checkpoint.best_epoch, checkpoint.best_state
        start_epoch = checkpoint.next_epoch
        log.info("resuming after epoch %d of %d from %s", checkpoint.epoch + 1, config.epochs, checkpoint_dir)
    elif resume:
        log.info("no checkpoint in %s yet: starting from epoch 1", checkpoint_dir)
    context = train.context
    if context is not None and train.aux is not None:
        raise ValueError("patch_context 'image' and auxiliary features cannot be combined; use patch_context 'bare'")
    trained = model if context is None else PatchesInImage(model)
    hold_zero = _hold_reference_row(model, config)
    class_weight = None
    if context is not None and config.balance_classes:
        # Every patch of an image is in each batch, so classes are balanced by weight rather than by sampling.
        counts = np.bincount(train.labels, minlength=len(CLASSES)).astype(np.float64)
        inverse = np.where(counts > 0, counts.sum() / (len(CLASSES) * np.maximum(counts, 1)), 0.0)
        class_weight = inverse**config.class_weight_exponent
    bf16 = training_precision(config, device) == "bf16"
    loss_weight = None if class_weight is None else torch.from_numpy(class_weight).float().to(device)
    lesion_max = context is not None and config.lesion_pooling == "max"
    net = ctx.wrap(trained)
    started = time.perf_counter()
    try:
        for epoch in range(start_epoch, config.epochs):
            lr = learning_rate(config, epoch)
            net.train()
            if config.freeze_batchnorm_epoch is not None and epoch >= config.freeze_batchnorm_epoch:
                for module in model.modules():
                    if isinstance(module, _BatchNorm):
                        module.eval()
            t0 = time.perf_counter()
            loss_total, batches_done, patches_done = 0.0, 0, 0
            batches = (
                patch_batches(train, config, rng, ctx) if context is None
                else image_batches(train, config, rng, ctx, class_weight)
            )
            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                       disable=not (progress and ctx.is_main), leave=False)
            for batch in bar:
                bar.total = batch.steps
                for group in optimiser.param_groups:
                    group["lr"] = learning_rate(config, epoch + batch.step / batch.steps)
                x = batch_input(batch.pixels, mean, std).to(device).contiguous(memory_format=layout)
                extra = None if batch.extra is None else torch.from_numpy(batch.extra).to(device)
                more = []
                if batch.crops is not None:
                    crops = batch.crops
                    more.append((batch_input(crops.pixels, mean, std).to(device).contiguous(memory_format=layout),
                                 torch.from_numpy(crops.labels).to(device), torch.from_numpy(crops.extra).to(device)))
                loss_total += train_step(net, optimiser, x, torch.from_numpy(batch.labels).to(device),
                                         global_batch=batch.global_weight, world_size=ctx.world_size, extra=extra,
                                         class_weight=loss_weight, bf16=bf16, lesion_max=lesion_max, more=more,
                                         lesion_pair_weight=config.lesion_pair_weight)
                batches_done += 1
                patches_done += batch.global_patches
                bar.set_postfix(loss=f"{loss_total * ctx.world_size / batches_done:.3f}")
            train_seconds = time.perf_counter() - t0
            # The mean over batches of the global batch loss, as in a single process.
            (loss_total,) = ctx.all_sum([loss_total])
            train_loss = loss_total / batches_done if batches_done else None
            evaluated = (epoch + 1) % config.holdout_every == 0 or epoch == config.epochs - 1
            metrics = _holdout_metrics(model, holdout, config, ctx) if evaluated else {"mean_auc": None}
            score = metrics["mean_auc"] if metrics["mean_auc"] is not None else -(train_loss or 0.0)
            record = {
                "epoch": epoch,
                "lr": lr,
                "lr_schedule": config.lr_schedule,
                "train_loss": train_loss,
                "holdout_mean_auc": metrics["mean_auc"],
                "holdout_auc": metrics.get("auc"),
                "seconds": round(train_seconds, 2),
                "precision": "bf16" if bf16 else "fp32",
                # Every rank trains on its slice of the same global batches in
                # lockstep: the global throughput is all patches over one rank's time.
                "patches_per_second": round(patches_done / train_seconds, 1) if train_seconds > 0 else None,
                "world_size": ctx.world_size,
            }
            history.append(record)
            elapsed = time.perf_counter() - started
            eta = elapsed / (epoch + 1 - start_epoch) * (config.epochs - epoch - 1)
            log.info(
                "epoch %d/%d: loss %.4f, hold-out mean AUC %s, %.0f patches/s, ETA %.0f s",
                epoch + 1, config.epochs, train_loss if train_loss is not None else float("nan"),
                f"{metrics['mean_auc']:.3f}" if metrics["mean_auc"] is not None else "n/a",
                record["patches_per_second"] or 0.0, eta,
            )
            # "last" keeps the final epoch, as the paper's reference did; "best_holdout" the best hold-out AUC.
            if config.select_epoch == "last" or (evaluated and score > best_score):
                best_score, best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
            if checkpoint_dir is not None and ctx.is_main:
                assert best_state is not None
                save_checkpoint(
                    checkpoint_dir,
                    Checkpoint(
                        epoch=epoch, model=model.state_dict(), optimiser=optimiser.state_dict(),
                        history=history, best_score=float(best_score), best_epoch=best_epoch,
                        best_state=best_state, config=config.to_dict(), world_size=ctx.world_size,
                        **rng_states(rng),
                    ),
                )
    finally:
        ctx.unwrap(trained)
        for hook in hold_zero:
            hook.remove()
    if best_state is None:
        raise ValueError(f"no epoch was trained: epochs={config.epochs}, resumed at epoch {start_epoch}")
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return TrainResult(model=model, best_epoch=best_epoch, history=history)


def _hold_reference_row(model: nn.Module, config: TrainConfig) -> list[torch.utils.hooks.RemovableHandle]:
    """Zero the reference class's fc row and bias and keep them at zero (their gradients are zeroed).

    SGD's momentum and weight decay leave a zero parameter with zero gradient
    at zero, so the row stays exactly zero. Returns the hooks to remove (none
    without a reference class).
    """
    if config.reference_class is None:
        return []
    if config.reference_class not in CLASSES:
        raise ValueError(f"reference_class must be one of {CLASSES}, got {config.reference_class!r}")
    fc = model.fc if hasattr(model, "fc") else None
    if not isinstance(fc, nn.Linear):
        raise ValueError(f"reference_class needs a classifier with an fc layer, got {type(model).__name__}")
    row = CLASSES.index(config.reference_class)
    keep = torch.ones(fc.out_features, 1, device=fc.weight.device)
    keep[row] = 0.0
    with torch.no_grad():
        fc.weight[row].zero_()
        fc.bias[row].zero_()
    return [fc.weight.register_hook(lambda g: g * keep), fc.bias.register_hook(lambda g: g * keep[:, 0])]


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's legacy and torch's (CPU and every GPU) generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def patch_probabilities(
    model: nn.Module, patches: PatchSet, *, batch_size: int, device: torch.device, rows: np.ndarray | None = None
) -> np.ndarray:
    """Class probabilities ``(n, C)`` of ``patches`` (the ``rows`` given, default all), as they were trained:
    bare, with their auxiliary features, or in their images (one forward pass per image)."""
    rows = np.arange(len(patches)) if rows is None else rows
    if patches.context is not None:
        return _in_image_probabilities(model, patches, rows, device=device)
    return predict(model, patches.pixels[rows], mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=batch_size,
                   device=device, extra=None if patches.aux is None else patches.aux[rows])


@torch.inference_mode()
def _in_image_probabilities(model: nn.Module, patches: PatchSet, rows: np.ndarray, *, device: torch.device) -> np.ndarray:
    context = patches.context
    assert context is not None
    net = PatchesInImage(model)
    was_training = model.training
    model.eval()
    out = np.zeros((len(rows), len(CLASSES)), dtype=np.float32)
    wanted = np.zeros(len(patches), dtype=bool)
    wanted[rows] = True
    position = np.full(len(patches), -1)
    position[rows] = np.arange(len(rows))
    try:
        for i in np.unique(context.image_index[rows]):
            pixels, cells, _, (members,) = context.batch([int(i)], patches.labels)
            logits = net(batch_input(pixels, IMAGENET_MEAN, IMAGENET_STD).to(device), torch.from_numpy(cells).to(device))
            probs = torch.softmax(logits[0, : len(members)], dim=1).float().cpu().numpy()
            keep = wanted[members]
            out[position[members[keep]]] = probs[keep]
    finally:
        model.train(was_training)
    return out


def _holdout_metrics(model: nn.Module, holdout: PatchSet, config: TrainConfig, ctx: DistContext) -> dict[str, Any]:
    """One-vs-rest metrics on the hold-out patches; each rank predicts its shard, every rank gets all of them."""
    if len(holdout) == 0:
        return {"mean_auc": None}
    mine = ctx.shard(np.arange(len(holdout)))
    probs = patch_probabilities(model, holdout, batch_size=config.eval_batch_size, device=ctx.device, rows=mine)
    return one_vs_rest_metrics(holdout.labels, ctx.gather_rows(probs), CLASSES)
