"""Unit visualisations for the experts (DESIGN.md §2), written into the bundle under ``units/``.

For every ranked unit: the hold-out patches that activate it most (by the
unit's largest activation on the patch), each shown plain and masked the
Lu & Perer way — the unit's layer4 map on that patch, bilinearly upsampled to
the patch with :mod:`deepminer.grid` and binarised at the unit's threshold,
everything outside the mask dimmed — plus the downscaled mammogram the patch
came from. The threshold is by default the unit's 99th-percentile activation
over the hold-out patches, the data set these visualisations are drawn from:
a unit's activations on a small patch run well below those on a whole
mammogram, so the whole-mammogram threshold of the ranking
(``threshold_source="ranking"``) leaves most patch masks empty. The index
records both. ``units/index.json`` ties them together for the service::

    {"<unit_id>": {"threshold": float,                  # the one the masks use
                   "threshold_source": "ranking" | "patches",
                   "thresholds": {"ranking": float, "patches": float},
                   "classes": {class: {"rank": int, "count": int}},
                   "patches": [{"rank", "activation", "mask_fraction", "image_id",
                                "box": {"top", "left", "side"},            # source image pixels
                                "context_box": {"top", "left", "height", "width"},  # context image pixels
                                "patch", "masked", "context"}]}}           # paths relative to the bundle

One context image serves every patch of its mammogram, so it is not outlined
itself; ``context_box`` says where to draw the outline.

The same pass scores every unit, not only the ranked ones: ``units/top_patches.npz``
(:func:`write_top_patch_table`, :class:`deepminer.unit_patches.TopPatchTable`)
keeps every unit's top patches by reference (image, box, activation), without
pixels, so the service can render an unranked unit's patches on demand with the
same drawing functions (:mod:`deepminer.unit_patches`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from deepminer.bundle import PATCHES_PER_UNIT, UNITS_DIR, UNITS_INDEX_FILE
from deepminer.formulas import TopQuantile
from deepminer.grid import feature_grid_shape
from deepminer.imaging import read_image, read_image_shape, resize
from deepminer.unit_patches import (
    CONTEXT_HEIGHT,
    DIM,
    TOP_PATCHES_FILE,
    TopPatchTable,
    context_box,
    context_shape,
    dim_outside,
    to_uint8,
    unit_mask,
)
from training.data import PatchSet
from training.evaluate import batch_input
from training.manifest import ImageRecord
from training.ranking import UnitRanking

__all__ = [
    "CONTEXT_HEIGHT",
    "DIM",
    "UnitPatches",
    "dim_outside",
    "merge_top",
    "to_uint8",
    "top_activating_patches",
    "unit_mask",
    "write_top_patch_table",
    "write_unit_visualisations",
]


@dataclass(frozen=True)
class UnitPatches:
    """Each unit's top hold-out patches, best first.

    Row u belongs to ``units[u]``. Where there are fewer patches than columns,
    ``indices`` is -1 and ``activations`` is -inf. ``patch_thresholds`` is each
    unit's ``q`` quantile over every layer4 cell of every patch, for comparison
    with the ranking's whole-mammogram thresholds.
    """

    units: tuple[int, ...]
    activations: np.ndarray  # (U, n) the unit's largest activation on the patch
    indices: np.ndarray  # (U, n) index into the PatchSet
    maps: np.ndarray  # (U, n, h, w) the unit's layer4 map on the patch
    patch_thresholds: np.ndarray  # (U,)

    def subset(self, units: Sequence[int]) -> UnitPatches:
        """The rows of ``units`` (each one of :attr:`units`), in that order."""
        row = {k: u for u, k in enumerate(self.units)}
        missing = [int(k) for k in units if int(k) not in row]
        if missing:
            raise ValueError(f"units {missing[:10]} are not among the {len(self.units)} units of these patches")
        rows = [row[int(k)] for k in units]
        return UnitPatches(
            units=tuple(int(k) for k in units),
            activations=self.activations[rows],
            indices=self.indices[rows],
            maps=self.maps[rows],
            patch_thresholds=self.patch_thresholds[rows],
        )


def merge_top(
    best: tuple[np.ndarray, np.ndarray, np.ndarray],
    new: tuple[np.ndarray, np.ndarray, np.ndarray],
    n: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the ``n`` largest activations per row of ``(activations, indices, maps)`` from both sets.

    ``best`` holds earlier (lower) patch indices than ``new``, ordered by
    activation, so a stable sort on the activation alone breaks ties towards
    the lower patch index and the result does not depend on the batch size.
    """
    acts = np.concatenate([best[0], new[0]], axis=1)
    order = np.argsort(-acts, axis=1, kind="stable")[:, :n]
    idx = np.concatenate([best[1], new[1]], axis=1)
    maps = np.concatenate([best[2], new[2]], axis=1)
    rows = np.arange(acts.shape[0])[:, None]
    return acts[rows, order], idx[rows, order], maps[rows, order]


@torch.inference_mode()
def top_activating_patches(
    body: nn.Module,
    patches: PatchSet,
    units: Sequence[int],
    *,
    n: int = PATCHES_PER_UNIT,
    q: float = 0.99,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    batch_size: int = 64,
    progress: bool = True,
) -> UnitPatches:
    """One streamed pass of ``patches`` through ``body`` (the FCN's layers up to layer4).

    Only a running top ``n`` per unit is kept (activation, patch index and the
    unit's ``(h, w)`` map) and the top ``1 - q`` of its activations for the
    patch thresholds, so memory does not grow beyond that.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(patches) == 0:
        raise ValueError("no hold-out patches to visualise units with")
    units = tuple(int(k) for k in units)
    grid = feature_grid_shape(*patches.pixels.shape[1:])
    best = (
        np.empty((len(units), 0), np.float32),
        np.empty((len(units), 0), np.int64),
        np.empty((len(units), 0, *grid), np.float32),
    )
    quantiles = TopQuantile(len(units), total=len(patches) * grid[0] * grid[1], q=q)
    select = torch.as_tensor(units, dtype=torch.long, device=device)
    was_training = body.training
    body.eval().to(device)
    try:
        starts = range(0, len(patches), batch_size)
        for start in tqdm(starts, desc="unit patches", unit="batch", disable=not progress):
            x = batch_input(patches.pixels[start : start + batch_size], mean, std).to(device)
            maps = body(x).index_select(1, select).float().cpu().numpy()  # (B, U, h, w)
            maps = maps.transpose(1, 0, 2, 3)  # (U, B, h, w)
            acts = maps.reshape(*maps.shape[:2], -1).max(axis=2)
            idx = np.broadcast_to(np.arange(start, start + maps.shape[1]), acts.shape)
            best = merge_top(best, (acts, idx, maps), n)
            quantiles.update(maps)
    finally:
        body.train(was_training)
    acts, idx, maps = best
    if acts.shape[1] < n:  # fewer patches than n: pad so every unit has n columns
        pad = n - acts.shape[1]
        acts = np.pad(acts, ((0, 0), (0, pad)), constant_values=-np.inf)
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        maps = np.pad(maps, ((0, 0), (0, pad), (0, 0), (0, 0)))
    return UnitPatches(units=units, activations=acts, indices=idx, maps=maps, patch_thresholds=quantiles.thresholds())


def save_png(path: Path, pixels: np.ndarray) -> None:
    """Write 8-bit ``pixels`` as a PNG at zlib's default level, creating its folder.

    Not ``optimize=True``: a build writes a few thousand of these, and its search for the smallest encoding took
    about 9 s of the demo's build, where zlib's default takes 3 s, for files 1% smaller.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG", compress_level=6)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _file_stem(image_id: str, taken: set[str]) -> str:
    """A file-name-safe, unique stem for an image id."""
    stem = _UNSAFE.sub("_", image_id).strip(".") or "image"
    candidate, i = stem, 1
    while candidate in taken:
        i += 1
        candidate = f"{stem}_{i}"
    taken.add(candidate)
    return candidate


def write_unit_visualisations(
    root: Path,
    top: UnitPatches,
    patches: PatchSet,
    records: Sequence[ImageRecord],
    ranking: UnitRanking,
    *,
    threshold_source: Literal["ranking", "patches"] = "patches",
    dim: float = DIM,
    context_height: int = CONTEXT_HEIGHT,
    progress: bool = True,
) -> dict[str, Any]:
    """Render ``top`` as PNGs under ``root / units`` and write ``units/index.json``; returns the index.

    ``records`` are the images ``patches`` were cut from; paths in the index
    are relative to ``root``. Masks are binarised at ``top.patch_thresholds``
    (hold-out patches, the default) or, with ``threshold_source="ranking"``, at
    ``ranking.thresholds`` (whole mammograms).
    """
    if threshold_source not in ("ranking", "patches"):
        raise ValueError(f"threshold_source must be 'ranking' or 'patches', got {threshold_source!r}")
    root = Path(root)
    by_id = {r.image_id: r for r in records}
    patch_size = int(patches.pixels.shape[1])
    contexts: dict[str, tuple[str, float, float]] = {}  # image id -> (path, row scale, column scale)
    stems: set[str] = set()

    def context(image_id: str) -> tuple[str, float, float]:
        if image_id not in contexts:
            if image_id not in by_id:
                raise ValueError(f"patch from image {image_id!r}, which is not among the {len(by_id)} records given")
            pixels = read_image(by_id[image_id].image_path)
            height, width = pixels.shape
            out_h, out_w = context_shape(height, width, context_height)
            rel = f"{UNITS_DIR}/context/{_file_stem(image_id, stems)}.png"
            save_png(root / rel, to_uint8(resize(pixels, (out_h, out_w))))
            contexts[image_id] = (rel, out_h / height, out_w / width)
        return contexts[image_id]

    classes_of: dict[int, dict[str, dict[str, int]]] = {}
    for c, name in enumerate(ranking.classes):
        for rank, k in enumerate(ranking.ranked(c), start=1):
            classes_of.setdefault(int(k), {})[name] = {"rank": rank, "count": int(ranking.counts[c, k])}

    index: dict[str, Any] = {}
    for u, unit in enumerate(tqdm(top.units, desc="unit visualisations", unit="unit", disable=not progress)):
        thresholds = {"ranking": float(ranking.thresholds[unit]), "patches": float(top.patch_thresholds[u])}
        threshold = thresholds[threshold_source]
        entries = []
        for col in range(top.indices.shape[1]):
            i = int(top.indices[u, col])
            if i < 0:
                break
            rank = col + 1
            pixels = patches.pixels[i].astype(np.float32)
            mask = unit_mask(top.maps[u, col], patch_size, threshold)
            patch_rel = f"{UNITS_DIR}/{unit}/patch_{rank}.png"
            masked_rel = f"{UNITS_DIR}/{unit}/masked_{rank}.png"
            save_png(root / patch_rel, to_uint8(pixels))
            save_png(root / masked_rel, dim_outside(pixels, mask, dim))
            box = patches.boxes[i]
            context_rel, sy, sx = context(patches.image_ids[i])
            entries.append(
                {
                    "rank": rank,
                    "activation": float(top.activations[u, col]),
                    "mask_fraction": float(mask.mean()),
                    "image_id": patches.image_ids[i],
                    "box": {"top": box.top, "left": box.left, "side": box.side},
                    "context_box": context_box(box.top, box.left, box.side, scale=(sy, sx)),
                    "patch": patch_rel,
                    "masked": masked_rel,
                    "context": context_rel,
                }
            )
        index[str(unit)] = {
            "threshold": threshold,
            "threshold_source": threshold_source,
            "thresholds": thresholds,
            "classes": classes_of.get(unit, {}),
            "patches": entries,
        }
    (root / UNITS_INDEX_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / UNITS_INDEX_FILE).write_text(json.dumps(index, indent=1) + "\n")
    return index


def write_top_patch_table(
    root: Path,
    top: UnitPatches,
    patches: PatchSet,
    records: Sequence[ImageRecord],
    *,
    thresholds: np.ndarray,
    threshold_source: Literal["ranking", "patches"],
    images_root: Path,
) -> TopPatchTable:
    """Write ``units/top_patches.npz`` under ``root``: every unit's top patches by reference; returns the table.

    ``top`` must hold every unit, in order (``top.units == range(K)``), so that
    the service can show the top patches of a unit outside the ranked set,
    rendering them on demand from the hold-out images (:mod:`deepminer.unit_patches`).
    ``thresholds`` ``(K,)`` are the mask thresholds from ``threshold_source``.
    Image paths are stored relative to ``images_root`` (the manifest's folder)
    where they lie under it.
    """
    if top.units != tuple(range(len(top.units))):
        raise ValueError(
            f"the table needs every unit in order 0..K-1, got {len(top.units)} units starting {top.units[:5]}"
        )
    if thresholds.shape != (len(top.units),):
        raise ValueError(f"thresholds must be ({len(top.units)},), got {thresholds.shape}")
    by_id = {r.image_id: r for r in records}
    used = np.unique(top.indices[top.indices >= 0])  # patch indices any unit refers to, ascending
    position = np.full(len(patches), -1, dtype=np.int64)
    position[used] = np.arange(len(used))
    image_ids = tuple(dict.fromkeys(patches.image_ids[i] for i in used))
    image_of = {image_id: j for j, image_id in enumerate(image_ids)}
    missing = [i for i in image_ids if i not in by_id]
    if missing:
        raise ValueError(f"patches from images {missing[:5]}, which are not among the {len(by_id)} records given")
    images_root = Path(images_root).resolve()

    def stored_path(path: Path) -> str:
        resolved = Path(path).resolve()
        return resolved.relative_to(images_root).as_posix() if resolved.is_relative_to(images_root) else str(resolved)

    boxes = [patches.boxes[i] for i in used]
    shapes = [read_image_shape(by_id[i].image_path) for i in image_ids]
    table = TopPatchTable(
        activation=top.activations.astype(np.float32),
        patch=np.where(top.indices >= 0, position[np.maximum(top.indices, 0)], -1).astype(np.int32),
        threshold=np.asarray(thresholds, dtype=np.float32),
        threshold_source=threshold_source,
        boxes=np.asarray([[b.top, b.left, b.side] for b in boxes], dtype=np.int32).reshape(-1, 3),
        image=np.asarray([image_of[patches.image_ids[i]] for i in used], dtype=np.int32),
        image_ids=image_ids,
        image_paths=tuple(stored_path(by_id[i].image_path) for i in image_ids),
        image_shapes=np.asarray(shapes, dtype=np.int32).reshape(-1, 2),
    )
    table.save(Path(root) / TOP_PATCHES_FILE)
    return table
