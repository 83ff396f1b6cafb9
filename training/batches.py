"""What one training epoch feeds the model, batch by batch: bare patches, or whole images with their patches.

Every rank of a distributed run draws the same global batches from the same
random stream and keeps its shard (:meth:`training.distributed.DistContext.shard`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from deepminer.grid import NETWORK_STRIDE
from training.config import TrainConfig
from training.context import moved_boxes
from training.data import PatchSet
from training.distributed import DistContext
from training.patches import CLASSES


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


def batch_starts(n: int, size: int, min_batch: int) -> list[int]:
    """Where each batch of an epoch of ``n`` samples starts, ``size`` at a time; a last batch smaller than
    ``min_batch`` is left out."""
    return [start for start in range(0, n, size) if min(size, n - start) >= min_batch]


@dataclass
class Batch:
    """This rank's part of one global batch: pixels ``(n, H, W)``, labels, the model's second input, and the
    global batch's patch count and loss normaliser (its patch count, or summed class weight)."""

    pixels: np.ndarray
    labels: np.ndarray
    extra: np.ndarray | None
    global_patches: int
    global_weight: float
    # With lesion_crops: this rank's lesion crops of the same SGD step, classified with the images in one
    # BatchNorm batch. ``global_patches`` and ``global_weight`` above count both parts; the crops' own are unused.
    crops: Batch | None = None
    # Where this step lies in its epoch: the ``step``-th (0-based) of ``steps`` (the learning-rate schedule, progress).
    step: int = 0
    steps: int = 1


def patch_batches(train: PatchSet, config: TrainConfig, rng: np.random.Generator, ctx: DistContext) -> Iterator[Batch]:
    """Bare patches: ``samples_per_epoch`` patches (class-balanced when configured) in batches of ``batch_size``."""
    order = epoch_order(train.labels, balance=config.balance_classes, rng=rng, samples=config.samples_per_epoch)
    # Fewer samples than processes (or than 2) cannot be split into BatchNorm batches on every rank.
    min_batch = max(2, ctx.world_size)
    starts = batch_starts(len(order), config.batch_size, min_batch)
    for step, start in enumerate(starts):
        idx = order[start : start + config.batch_size]
        # Flips are drawn for the whole global batch on every rank, so the
        # RNG streams stay in step and each patch gets the flip it would get
        # in a single process.
        flip_h = flip_v = transpose = None
        if config.augment_flips:
            flip_h = rng.random(len(idx)) < 0.5
            flip_v = rng.random(len(idx)) < 0.5
        if config.augment_transpose:
            transpose = rng.random(len(idx)) < 0.5
        mine = ctx.shard(np.arange(len(idx)))
        pixels = train.pixels[idx[mine]].astype(np.float32)
        if flip_h is not None and flip_v is not None:
            pixels[flip_h[mine]] = pixels[flip_h[mine], :, ::-1]
            pixels[flip_v[mine]] = pixels[flip_v[mine], ::-1, :]
        if transpose is not None:  # with the flips: all 8 rotations and reflections of a square
            pixels[transpose[mine]] = pixels[transpose[mine]].transpose(0, 2, 1)
        yield Batch(
            pixels=np.ascontiguousarray(pixels),
            labels=train.labels[idx[mine]],
            extra=None if train.aux is None else train.aux[idx[mine]],
            global_patches=len(idx),
            global_weight=float(len(idx)),
            step=step,
            steps=len(starts),
        )


def image_batches(
    train: PatchSet, config: TrainConfig, rng: np.random.Generator, ctx: DistContext, class_weight: np.ndarray | None
) -> Iterator[Batch]:
    """Patches in their images: every image once, ``images_per_batch`` at a time, each with all of its patches."""
    context = train.context
    assert context is not None
    order = rng.permutation(len(context.images))
    if config.normal_image_share < 1.0:
        # Images without a lesion patch teach only "normal", which every image teaches already.
        has_lesion = np.zeros(len(context.images), dtype=bool)
        has_lesion[context.image_index[train.labels != CLASSES.index("normal")]] = True
        keep = has_lesion[order] | (rng.random(len(order)) < config.normal_image_share)
        order = order[keep]
    min_batch = max(1, ctx.world_size)
    weights = np.ones(len(CLASSES)) if class_weight is None else class_weight
    starts = batch_starts(len(order), config.images_per_batch, min_batch)
    for step, start in enumerate(starts):
        images = order[start : start + config.images_per_batch]
        # Drawn for the whole global batch on every rank, as for bare patches.
        flips = rng.random((len(images), 2)) < 0.5 if config.augment_flips else np.zeros((len(images), 2), bool)
        # Drawn only when asked for, so that runs without it keep their random stream.
        transposes = rng.random(len(images)) < 0.5 if config.augment_transpose else np.zeros(len(images), bool)
        shifts = (rng.integers(0, NETWORK_STRIDE, size=(len(images), 2)) if config.augment_shift
                  else np.zeros((len(images), 2), np.int64))
        mine = ctx.shard(np.arange(len(images)))
        pixels, cells, labels, _ = context.batch([int(i) for i in images[mine]], train.labels,
                                                 flips=[(bool(a), bool(b)) for a, b in flips[mine]],
                                                 transposes=[bool(t) for t in transposes[mine]],
                                                 shifts=[(int(a), int(b)) for a, b in shifts[mine]],
                                                 normal_cells=config.normal_cells)
        crops = lesion_crops(train, config, rng, ctx) if config.lesion_crops else None
        parts = [labels] if crops is None else [labels, crops.labels]
        mine_weight = sum(float(weights[part[part >= 0]].sum()) for part in parts)
        mine_patches = sum(int((part >= 0).sum()) for part in parts)
        global_weight, global_patches = ctx.all_sum([mine_weight, float(mine_patches)])
        yield Batch(
            pixels=pixels,
            labels=labels,
            extra=cells,
            global_patches=int(global_patches),
            global_weight=global_weight,
            crops=crops,
            step=step,
            steps=len(starts),
        )


def lesion_crops(train: PatchSet, config: TrainConfig, rng: np.random.Generator, ctx: DistContext) -> Batch:
    """This rank's share of ``config.lesion_crops`` windows of ``config.lesion_crop_size`` pixels, each around a
    lesion patch drawn with every lesion class equally likely, at a random place in the window (so at every phase
    of the layer4 grid) and mirrored like the images; each window keeps the patches wholly inside it."""
    context = train.context
    assert context is not None
    normal = CLASSES.index("normal")
    lesion = np.nonzero(train.labels != normal)[0]
    if len(lesion) == 0:
        raise ValueError("lesion_crops needs lesion patches in the training set; it has none")
    picks = lesion[epoch_order(train.labels[lesion], balance=True, rng=rng, samples=config.lesion_crops)]
    flips = rng.random((len(picks), 2)) < 0.5 if config.augment_flips else np.zeros((len(picks), 2), bool)
    transposes = rng.random(len(picks)) < 0.5 if config.augment_transpose else np.zeros(len(picks), bool)
    side = config.lesion_crop_size
    corners = np.zeros((len(picks), 2), dtype=np.int64)
    for n, row in enumerate(picks):
        shape = context.images[context.image_index[row]].shape
        (top, left, size), = moved_boxes(context.boxes[row : row + 1], shape, flip_h=bool(flips[n, 0]),
                                         flip_v=bool(flips[n, 1]), transpose=bool(transposes[n]))
        height, width = shape[::-1] if transposes[n] else shape
        for axis, (start, extent) in enumerate(((top, height), (left, width))):
            low, high = max(0, start + size - side), min(start, extent - side)
            corners[n, axis] = rng.integers(low, high + 1) if low <= high else max(0, min(start, extent - side))
    mine = ctx.shard(np.arange(len(picks)))
    pixels, cells, labels, _ = context.batch([int(context.image_index[r]) for r in picks[mine]], train.labels,
                                             flips=[(bool(a), bool(b)) for a, b in flips[mine]],
                                             transposes=[bool(t) for t in transposes[mine]],
                                             shifts=[(int(a), int(b)) for a, b in corners[mine]], crop=side,
                                             normal_cells=config.normal_cells)
    return Batch(pixels=pixels, labels=labels, extra=cells, global_patches=0, global_weight=0.0)
