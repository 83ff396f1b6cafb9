"""Training patches in their context: what the FCN computes at test time, taught at training time.

The FCN explains a whole mammogram cell by cell, and each interior layer4 cell
sees the tissue around it. A bare patch of a few cells has no interior: every
one of its cells sees the convolutions' zero padding, so a classifier trained
on bare patches learns features that a whole mammogram's cells never have.

With a context margin, each training sample is the patch together with
``margin`` network-input pixels of its surroundings, cut from the whole image
at the network's input scale (exactly the pixels the FCN sees at test time).
The patch's label applies to the mean logit of the layer4 cells whose centre
lies inside the patch. The classifier's ``fc`` is linear, so that mean logit is
``fc`` of the mean feature over those cells: :class:`PatchInContext` is the
classifier with average pooling restricted to the patch's cells, and the
trained weights are the classifier's own (``mean of maps = classifier`` holds
unchanged). A margin of 0 is the paper's bare patch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import ResNet

from deepminer.grid import NETWORK_STRIDE


class PatchInContext(nn.Module):
    """``forward(x, cells)``: the classifier's logits for the patch inside each context crop.

    ``x`` is ``(N, 3, S, S)``; ``cells`` ``(N, g, g)`` weights on the layer4 grid
    (1 on the patch's cells, 0 elsewhere). Returns ``fc(Σ cells·A / Σ cells)``,
    which equals the mean of the FCN's logit map over the patch's cells. Shares
    every module with ``classifier``.
    """

    def __init__(self, classifier: ResNet) -> None:
        super().__init__()
        if not isinstance(classifier, ResNet):
            raise ValueError(f"context training takes a plain ResNet classifier, got {type(classifier).__name__}")
        c = classifier
        self.body = nn.Sequential(c.conv1, c.bn1, c.relu, c.maxpool, c.layer1, c.layer2, c.layer3, c.layer4)
        self.fc = c.fc

    def forward(self, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        if cells.shape[0] != features.shape[0] or cells.shape[1:] != features.shape[2:]:
            raise ValueError(f"cells must be (N, h, w) = {(features.shape[0], *features.shape[2:])}, got {tuple(cells.shape)}")
        w = cells.to(features.dtype)
        pooled = torch.einsum("nkhw,nhw->nk", features, w) / w.sum(dim=(1, 2)).clamp_min(1e-6)[:, None]
        return self.fc(pooled)


def crop_side(patch_side: int, margin: int) -> int:
    """Side of a context crop: the patch plus ``margin`` on each side, in network-input pixels."""
    return patch_side + 2 * margin


def cut_context(
    image: np.ndarray, top: int, left: int, side: int, margin: int
) -> tuple[np.ndarray, np.ndarray]:
    """One context crop of ``image`` (at network-input scale) around the patch ``[top, top+side)²``.

    The crop is ``side + 2 margin`` square, moved inward where it would leave
    the image (never padded: the network never sees borders a whole image
    lacks), and zero-padded at the bottom/right only when the image is smaller
    than the crop. Returns the crop and the ``(g, g)`` cell weights: 1 on each
    layer4 cell whose centre (pixel 32 i of the crop) lies inside the patch.
    """
    size = crop_side(side, margin)
    h, w = image.shape
    if h < size or w < size:
        padded = np.zeros((max(h, size), max(w, size)), dtype=image.dtype)
        padded[:h, :w] = image
        image, h, w = padded, padded.shape[0], padded.shape[1]
    ct = int(np.clip(top - margin, 0, h - size))
    cl = int(np.clip(left - margin, 0, w - size))
    g = math.ceil(size / NETWORK_STRIDE)
    centres = np.arange(g) * NETWORK_STRIDE
    rows = (centres >= top - ct) & (centres < top - ct + side)
    cols = (centres >= left - cl) & (centres < left - cl + side)
    cells = (rows[:, None] & cols[None, :]).astype(np.float32)
    if not cells.any():  # a patch narrower than a cell: the cell nearest its centre
        i = min(g - 1, round((top - ct + side / 2) / NETWORK_STRIDE))
        j = min(g - 1, round((left - cl + side / 2) / NETWORK_STRIDE))
        cells[i, j] = 1.0
    return image[ct : ct + size, cl : cl + size], cells
