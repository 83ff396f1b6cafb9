"""Training patches in their whole image: what the FCN computes at test time, taught at training time.

The FCN explains a whole mammogram cell by cell, and each interior layer4 cell
sees the tissue around it. A bare patch of a few cells has no interior: every
one of its cells sees the convolutions' zero padding, so a classifier trained
on bare patches learns features that a whole mammogram's cells never have
(with the demo's small patches the FCN then misses every lesion).

With ``patch_context = "image"`` the patches keep the paper's rule and labels,
but each is classified inside its whole image, scaled as the FCN sees it
(short side 4 × patch size): the patch's logits are the mean of the FCN's
logit map over the layer4 cells whose centre lies inside the patch, or, with
``cell_weights = "overlap"``, its weighted mean, each cell weighted by the
share of its footprint that the patch covers (:func:`patch_cells`). The
classifier's ``fc`` is linear, so that mean is ``fc`` of the mean feature over
those cells: :class:`PatchesInImage` is the classifier with its average
pooling restricted to each patch's cells, and the trained weights are the
classifier's own (``mean of maps = classifier`` still holds). One forward pass
classifies every patch of an image. ``"bare"`` is the paper's patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import ResNet

from deepminer.grid import NETWORK_STRIDE, feature_grid_shape
from training.batchnorm import forward_together
from training.patches import CLASSES

PATCH_CONTEXTS = ("bare", "image")
CELL_WEIGHTS = ("centre", "overlap")


class PatchesInImage(nn.Module):
    """``forward(x, cells)``: logits of every patch of each image, ``(N, P, C)``.

    ``x`` is ``(N, 3, H, W)``; ``cells`` ``(N, P, h, w)`` weights on the layer4
    grid, 1 on a patch's cells and 0 elsewhere (an all-zero row is padding).
    Patch p's logits are ``fc(Σ cells_p·A / Σ cells_p)``, the mean of the FCN's
    logit map over its cells. Shares every module with ``classifier``.
    """

    def __init__(self, classifier: ResNet) -> None:
        super().__init__()
        if not isinstance(classifier, ResNet):
            raise ValueError(f"patches in their image need a plain ResNet classifier, got {type(classifier).__name__}")
        c = classifier
        self.body = nn.Sequential(c.conv1, c.bn1, c.relu, c.maxpool, c.layer1, c.layer2, c.layer3, c.layer4)
        self.fc = c.fc

    def forward(
        self,
        x: torch.Tensor | list[torch.Tensor],
        cells: torch.Tensor | list[torch.Tensor],
        use_max: torch.Tensor | list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """``use_max`` ``(N, P)`` bool: those patches take each class's largest logit over their cells
        instead of the mean (multiple-instance pooling for lesion patches; see ``TrainConfig.lesion_pooling``).

        Lists: inputs of different sizes classified as one batch (whole images and lesion crops), with one
        BatchNorm batch over all of them (:func:`training.batchnorm.forward_together`); returns their logits.
        """
        if isinstance(x, list):
            if not isinstance(cells, list) or len(cells) != len(x):
                raise ValueError("inputs given as a list need a list of cells, one per input")
            maxes = use_max if isinstance(use_max, list) else [use_max] * len(x)
            features = forward_together(self.body, x)
            return [self._pooled(f, c, m) for f, c, m in zip(features, cells, maxes)]
        assert isinstance(cells, torch.Tensor) and not isinstance(use_max, list)
        return self._pooled(self.body(x), cells, use_max)

    def _pooled(self, features: torch.Tensor, cells: torch.Tensor, use_max: torch.Tensor | None) -> torch.Tensor:
        if cells.dim() != 4 or cells.shape[0] != features.shape[0] or cells.shape[2:] != features.shape[2:]:
            raise ValueError(
                f"cells must be (N, P, h, w) with N, h, w = {features.shape[0]}, {tuple(features.shape[2:])}, "
                f"got {tuple(cells.shape)}"
            )
        w = cells.to(features.dtype)
        pooled = torch.einsum("nkhw,nphw->npk", features, w) / w.sum(dim=(2, 3)).clamp_min(1e-6)[..., None]
        logits = self.fc(pooled)
        if use_max is None or not bool(use_max.any()):
            return logits
        cell_logits = torch.einsum("nkhw,ck->nchw", features, self.fc.weight.to(features.dtype)).float()
        cell_logits = cell_logits + self.fc.bias.float()[None, :, None, None]
        outside = (cells <= 0)[:, :, None]  # (N, P, 1, h, w)
        peak = cell_logits[:, None].masked_fill(outside, float("-inf")).amax(dim=(3, 4))  # (N, P, C)
        return torch.where(use_max[..., None], peak.to(logits.dtype), logits)


def patch_cells(boxes: np.ndarray, input_shape: tuple[int, int], weights: str = "centre") -> np.ndarray:
    """``(P, h, w)`` float32: each layer4 cell's weight in patch p.

    ``boxes`` is ``(P, 3)`` ``(top, left, side)`` in network-input pixels (of a
    mirrored, transposed or shifted input: :func:`moved_boxes`). Cell (i, j) is
    centred on pixel (32 i, 32 j) (:mod:`deepminer.grid`).

    ``weights``:
    - ``"centre"``: 1 on each cell whose centre lies inside the patch. A patch
      narrower than a cell gets the cell nearest its centre.
    - ``"overlap"``: the share of the cell's 32 × 32 footprint, centred on its
      centre, that the patch covers. At every phase of the grid these weights
      are centred on the patch; a patch whose edges fall halfway between cell
      centres gets exactly the ``k × k`` cells of the "centre" rule.
    """
    if weights not in CELL_WEIGHTS:
        raise ValueError(f"cell weights must be one of {CELL_WEIGHTS}, got {weights!r}")
    height, width = input_shape
    h, w = feature_grid_shape(height, width)
    top, left, side = boxes[:, 0].astype(np.float64), boxes[:, 1].astype(np.float64), boxes[:, 2].astype(np.float64)
    ys = np.arange(h) * NETWORK_STRIDE
    xs = np.arange(w) * NETWORK_STRIDE
    if weights == "overlap":
        cells = (_footprint_share(ys, top, side)[:, :, None] * _footprint_share(xs, left, side)[:, None, :])
        cells = cells.astype(np.float32)
    else:
        rows = (ys[None, :] >= top[:, None]) & (ys[None, :] < (top + side)[:, None])
        cols = (xs[None, :] >= left[:, None]) & (xs[None, :] < (left + side)[:, None])
        cells = (rows[:, :, None] & cols[:, None, :]).astype(np.float32)
    for p in np.nonzero(~cells.any(axis=(1, 2)))[0]:
        i = min(h - 1, int(round((top[p] + side[p] / 2) / NETWORK_STRIDE)))
        j = min(w - 1, int(round((left[p] + side[p] / 2) / NETWORK_STRIDE)))
        cells[p, i, j] = 1.0
    return cells


def _footprint_share(centres: np.ndarray, start: np.ndarray, side: np.ndarray) -> np.ndarray:
    """``(P, n)``: the share of each cell's footprint along one axis, ``[centre - 16, centre + 16)``, that
    ``[start_p, start_p + side_p)`` covers."""
    half = NETWORK_STRIDE / 2
    low = np.maximum(centres[None, :] - half, start[:, None])
    high = np.minimum(centres[None, :] + half, (start + side)[:, None])
    return np.clip(high - low, 0.0, None) / NETWORK_STRIDE


def moved_boxes(
    boxes: np.ndarray,
    input_shape: tuple[int, int],
    *,
    flip_h: bool = False,
    flip_v: bool = False,
    transpose: bool = False,
    shift: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Where ``(P, 3)`` boxes ``(top, left, side)`` of an input of ``input_shape`` lie once it is mirrored
    left-right and / or top-bottom, then transposed, then shifted ``shift`` = ``(down, right)`` pixels."""
    height, width = input_shape
    top, left, side = boxes[:, 0], boxes[:, 1], boxes[:, 2]
    if flip_v:
        top = height - top - side
    if flip_h:
        left = width - left - side
    if transpose:
        top, left = left, top
    return np.stack([top + shift[0], left + shift[1], side], axis=1)


@dataclass(frozen=True)
class ImageContext:
    """The patch set's images at network-input scale, and where each patch lies in its image.

    ``images[i]`` is image i ``(H_i, W_i)`` float16 in [0, 1]; patch n lies in
    ``images[image_index[n]]`` at ``boxes[n]`` = ``(top, left, side)`` network-input pixels.
    """

    images: tuple[np.ndarray, ...]
    image_index: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 3) int64
    # How a patch's layer4 cells are weighted (patch_cells; TrainConfig.cell_weights).
    cell_weights: str = "centre"

    def batch(
        self,
        images: Sequence[int],
        labels: np.ndarray,
        *,
        flips: Sequence[tuple[bool, bool]] | None = None,
        transposes: Sequence[bool] | None = None,
        shifts: Sequence[tuple[int, int]] | None = None,
        crop: int | None = None,
        normal_cells: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """Images ``images`` as one batch: pixels ``(B, H, W)`` (zero-padded to the largest), cells
        ``(B, P, h, w)``, patch labels ``(B, P)`` (-100 on padding) and each image's patch indices.

        ``flips``: per image, (left-right, top-bottom) mirroring of pixels and cells alike.
        ``transposes``: per image, rows and columns swapped after the flips (pixels and cells alike); with the
        flips, every rotation by 90° and every reflection.
        ``shifts``: per image, ``(rows, columns)`` cut off its top and left, after the flips and the transpose:
        its patches move up and left with it and meet the layer4 grid at another phase, while the image still
        begins at the network's own zero padding, as at test time (see ``TrainConfig.augment_shift``).
        ``crop``: each image is cut to a window of at most ``crop`` × ``crop`` pixels whose top-left corner is its
        shift, and keeps only the patches that lie wholly inside the window (see ``TrainConfig.lesion_crops``).
        ``normal_cells``: the normal patches are replaced by their cells, one by
        one (each cell that no lesion patch covers, labelled normal); see
        :func:`cellwise_normal`. The patch indices then list the lesion patches only.
        """
        swapped = [bool(transposes[b]) if transposes is not None else False for b in range(len(images))]
        moved = [(int(shifts[b][0]), int(shifts[b][1])) if shifts is not None else (0, 0) for b in range(len(images))]
        if crop is not None and crop < 1:
            raise ValueError(f"crop must be a side of at least 1 pixel, got {crop}")
        shapes = []
        for i, t, (dy, dx) in zip(images, swapped, moved):
            h0, w0 = self.images[i].shape[::-1] if t else self.images[i].shape
            if not (0 <= dy < h0 and 0 <= dx < w0):
                raise ValueError(f"shift {(dy, dx)} must leave some of a {h0} x {w0} image")
            shapes.append((h0 - dy, w0 - dx) if crop is None else (min(crop, h0 - dy), min(crop, w0 - dx)))
        height, width = max(s[0] for s in shapes), max(s[1] for s in shapes)
        grid = feature_grid_shape(height, width)
        members = [np.nonzero(self.image_index == i)[0] for i in images]
        placed: list[np.ndarray] = []
        for b, (i, rows) in enumerate(zip(images, members)):
            fh, fv = flips[b] if flips is not None else (False, False)
            dy, dx = moved[b]
            boxes = moved_boxes(self.boxes[rows], self.images[i].shape, flip_h=fh, flip_v=fv,
                                transpose=swapped[b], shift=(-dy, -dx))
            if crop is not None:
                inside = ((boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 0] + boxes[:, 2] <= shapes[b][0])
                          & (boxes[:, 1] + boxes[:, 2] <= shapes[b][1]))
                rows, boxes = rows[inside], boxes[inside]
                members[b] = rows
            placed.append(boxes)
        most = max(1, max(len(m) for m in members))
        pixels = np.zeros((len(images), height, width), dtype=np.float32)
        cells = np.zeros((len(images), most, *grid), dtype=np.float32)
        out_labels = np.full((len(images), most), -100, dtype=np.int64)
        for b, (i, rows) in enumerate(zip(images, members)):
            fh, fv = flips[b] if flips is not None else (False, False)
            img = self.images[i].astype(np.float32)
            if fh:
                img = img[:, ::-1]
            if fv:
                img = img[::-1, :]
            if swapped[b]:
                img = img.T
            dy, dx = moved[b]
            img = img[dy : dy + shapes[b][0], dx : dx + shapes[b][1]]
            pixels[b, : img.shape[0], : img.shape[1]] = img
            if len(rows):
                own = patch_cells(placed[b], shapes[b], self.cell_weights)
                own_labels = labels[rows]
                if normal_cells:
                    own, own_labels = cellwise_normal(own, own_labels)
                    members[b] = rows[labels[rows] != NORMAL]
                if own.shape[0] > cells.shape[1]:
                    grown = np.zeros((cells.shape[0], own.shape[0], *grid), dtype=np.float32)
                    grown[:, : cells.shape[1]] = cells
                    cells = grown
                    more = np.full((out_labels.shape[0], own.shape[0]), -100, dtype=np.int64)
                    more[:, : out_labels.shape[1]] = out_labels
                    out_labels = more
                cells[b, : len(own), : own.shape[1], : own.shape[2]] = own
                out_labels[b, : len(own)] = own_labels
        return pixels, cells, out_labels, members


NORMAL = CLASSES.index("normal")


def cellwise_normal(cells: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lesion patches as they are, normal patches replaced by their single cells.

    A patch is normal only when no lesion lies in it, so each of its cells is
    normal too: supervising the cells one by one keeps any single cell of
    normal tissue from a lesion class's probability, which the mean over a
    patch's cells would let through. A cell that a lesion patch also covers is
    left to that patch. Returns cells ``(P', h, w)`` and labels ``(P',)``,
    lesion patches first.
    """
    lesion = labels != NORMAL
    covered_by_lesion = cells[lesion].any(axis=0) if lesion.any() else np.zeros(cells.shape[1:], dtype=bool)
    normal = cells[~lesion].any(axis=0) & ~covered_by_lesion if (~lesion).any() else np.zeros(cells.shape[1:], bool)
    ys, xs = np.nonzero(normal)
    singles = np.zeros((len(ys), *cells.shape[1:]), dtype=np.float32)
    singles[np.arange(len(ys)), ys, xs] = 1.0
    return (
        np.concatenate([cells[lesion], singles]),
        np.concatenate([labels[lesion], np.full(len(ys), NORMAL, dtype=labels.dtype)]),
    )
