"""Image-level class scores from the FCN's probability maps (what /explain's ``scores`` and ``predicted_class`` are).

The spatial mean of the logit map is exactly the patch classifier applied to
the whole image, but on a mammogram a lesion covers a few percent of the
cells, so that mean says "normal" for nearly every image. A lesion class is
present when *some* part of the breast holds it, so the image-level score of
a lesion class is the peak of its probability map (as the reference code's
benchmark scored images), taken over the breast only: cells outside the breast
are not what a radiologist grades, and a network trained on breast patches
has no say there. The background class (``normal``) scores the breast cell
that is *least* normal, so an image is normal only when all of its breast is.

Rules, by name (the bundle records which one it was built for):

- ``breast_peak``: lesion class c: ``max_{(x,y) on breast} P_c(x, y)``;
  background class: ``min_{(x,y) on breast} P_bg(x, y)``.
- ``classifier``: ``softmax(mean_xy logits)``, the patch classifier's probabilities.
- ``patch_peak``: the patch classifier at the image's most suspicious patch.
  Every ``k × k`` block of cells (``k`` = the classifier's patch side in cells,
  ``patch_size / 32``) is classified as training classified a patch in its
  image, ``softmax(mean over the block of logits)`` (:mod:`training.context`);
  among the blocks mostly on the breast, the one least likely normal is the
  most suspicious, and its probabilities are the scores of every class. Not
  the paper's: its benchmark took each class's peak cell; the demo recipe
  trains patches in their image, and this reads the image the same way
  (a benign lesion whose single cells lean malignant is still read benign when
  its patch is).
- ``worst_patch``: the patch classifier at the image's worst patch. Blocks as
  for ``patch_peak``, each classified as its most likely class; of the blocks
  classified as the most severe class that any block is (malignant before
  benign, as an image's label ranks its findings), the one most likely of that
  class; with no lesion block, the least normal block. An image with a sure
  benign finding and a malignant one is read at the malignant one, where
  ``patch_peak`` reads it at whichever block is less normal. Not the paper's.

The predicted class is the argmax of the scores. Scores rank images; under
``breast_peak`` they are not a distribution and need not sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepminer.formulas import softmax
from deepminer.grid import NETWORK_STRIDE
from deepminer.tissue import tissue_mask

SCORE_RULES = ("breast_peak", "classifier", "patch_peak", "worst_patch")
DEFAULT_SCORE_RULE = "breast_peak"
SCORE_RULE_DEFINITIONS = {
    "breast_peak": "lesion classes: peak of the probability map over breast cells; normal: the smallest normal "
    "probability over breast cells; predicted class = argmax (deepminer/scoring.py)",
    "classifier": "softmax of the mean logit map: the patch classifier on the whole image; predicted class = argmax "
    "(deepminer/scoring.py)",
    "patch_peak": "every class: softmax of the mean logits of the least normal patch-sized block of cells (half or "
    "more on the breast), the patch classifier at the most suspicious patch; predicted class = argmax "
    "(deepminer/scoring.py)",
    "worst_patch": "every class: softmax of the mean logits of the worst patch-sized block of cells (half or more on "
    "the breast): among the blocks whose most likely class is the most severe class of any block (malignant before "
    "benign), the one most likely of it; with no lesion block, the least normal block; predicted class = argmax "
    "(deepminer/scoring.py)",
}
"""What ``meta.json`` ``image_score.definition`` says of each rule."""
BACKGROUND_CLASS = "normal"


def classifier_probabilities(logits: np.ndarray) -> np.ndarray:
    """``softmax(mean_xy logits_c(x, y))``: exactly the patch classifier (global average pooling) on the image.

    ``logits`` is the FCN's ``(C, h, w)`` logit map; returns ``(C,)``.
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must be (C, h, w), got shape {logits.shape}")
    return softmax(logits.mean(axis=(1, 2)), axis=0)


def breast_cells(input_gray: np.ndarray, grid_shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(h, w)`` grid: the layer4 cells whose centre lies on breast tissue.

    ``input_gray`` is the grayscale network input in [0, 1] (the upload resized
    to the network's input size, before normalisation); cell (i, j) is centred
    on its pixel (32 i, 32 j) (:mod:`deepminer.grid`). Tissue is the Otsu mask
    (:func:`deepminer.tissue.tissue_mask`).
    """
    h, w = grid_shape
    rows = np.minimum(np.arange(h) * NETWORK_STRIDE, input_gray.shape[0] - 1)
    cols = np.minimum(np.arange(w) * NETWORK_STRIDE, input_gray.shape[1] - 1)
    return tissue_mask(input_gray)[np.ix_(rows, cols)]


def input_gray(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The grayscale picture in [0, 1] behind a normalised network input ``(1, 3, H, W)`` (its first channel)."""
    return x[0, 0] * np.float32(std[0]) + np.float32(mean[0])


def image_scores(
    probability_maps: np.ndarray,
    logits: np.ndarray,
    cells: np.ndarray,
    *,
    classes: Sequence[str],
    rule: str = DEFAULT_SCORE_RULE,
    patch_cells: int = 1,
) -> np.ndarray:
    """Image-level score of every class, ``(C,)``, under ``rule`` (module docstring).

    ``probability_maps`` and ``logits`` are ``(C, h, w)``; ``cells`` the
    ``(h, w)`` breast cells. An image with no breast cell is scored over all
    of its cells. ``patch_cells``: the classifier's patch side in layer4 cells
    (``patch_peak`` only; :attr:`deepminer.bundle.Bundle.patch_cells`).
    """
    if rule not in SCORE_RULES:
        raise ValueError(f"image score rule must be one of {SCORE_RULES}, got {rule!r}")
    if rule == "classifier":
        return classifier_probabilities(logits)
    if cells.shape != probability_maps.shape[1:]:
        raise ValueError(f"cells must be the grid {probability_maps.shape[1:]}, got {cells.shape}")
    if rule == "patch_peak":
        return most_suspicious_patch(logits, cells, classes=classes, patch_cells=patch_cells)
    if rule == "worst_patch":
        return worst_patch(logits, cells, classes=classes, patch_cells=patch_cells)
    flat = probability_maps.reshape(probability_maps.shape[0], -1)
    chosen = flat[:, cells.reshape(-1)] if cells.any() else flat
    scores = chosen.max(axis=1)
    if BACKGROUND_CLASS in classes:
        b = list(classes).index(BACKGROUND_CLASS)
        scores[b] = chosen[b].min()
    return scores


def block_means(values: np.ndarray, k: int) -> np.ndarray:
    """Means of every ``k × k`` block of the last two axes that lies inside them: ``(..., h - k + 1, w - k + 1)``."""
    h, w = values.shape[-2:]
    if not 1 <= k <= min(h, w):
        raise ValueError(f"block side must be in 1..{min(h, w)} for a {h} x {w} grid, got {k}")
    windows = np.lib.stride_tricks.sliding_window_view(values, (k, k), axis=(-2, -1))
    return windows.mean(axis=(-2, -1))


def _patch_blocks(logits: np.ndarray, cells: np.ndarray, patch_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Every patch-sized block's class probabilities ``(C, h', w')`` and whether it competes ``(h', w')``.

    A block is ``k × k`` cells, ``k = min(patch_cells, h, w)``; its probabilities
    are ``softmax`` of its mean logits (the patch classifier in context). Blocks
    with at least half of their cells on the breast compete; with none, all do.
    """
    if patch_cells < 1:
        raise ValueError(f"patch_cells must be at least 1, got {patch_cells}")
    k = min(patch_cells, *logits.shape[1:])
    probabilities = softmax(block_means(logits, k), axis=0)
    on_breast = block_means(cells.astype(np.float64), k) >= 0.5
    if not on_breast.any():
        on_breast = np.ones_like(on_breast)
    return probabilities, on_breast


def _block(probabilities: np.ndarray, ranking: np.ndarray) -> np.ndarray:
    """The probabilities ``(C,)`` of the block where ``ranking`` (-inf: out of the running) is largest."""
    i, j = np.unravel_index(int(np.argmax(ranking)), ranking.shape)
    return probabilities[:, i, j].astype(np.float32)


def most_suspicious_patch(
    logits: np.ndarray, cells: np.ndarray, *, classes: Sequence[str], patch_cells: int
) -> np.ndarray:
    """``patch_peak``: the class probabilities of the least normal patch-sized block mostly on the breast, ``(C,)``.

    Blocks as :func:`_patch_blocks` makes them. Without a background class, the
    block with the largest lesion probability wins.
    """
    return _least_normal(*_patch_blocks(logits, cells, patch_cells), classes)


def _least_normal(probabilities: np.ndarray, on_breast: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """The probabilities of the competing block least likely normal (without a background class, the one with the
    largest lesion probability)."""
    if BACKGROUND_CLASS in classes:
        suspicion = 1.0 - probabilities[list(classes).index(BACKGROUND_CLASS)]
    else:
        suspicion = probabilities.max(axis=0)
    return _block(probabilities, np.where(on_breast, suspicion, -np.inf))


def worst_patch(logits: np.ndarray, cells: np.ndarray, *, classes: Sequence[str], patch_cells: int) -> np.ndarray:
    """``worst_patch``: the class probabilities of the image's worst patch-sized block mostly on the breast, ``(C,)``.

    ``classes`` run from the background class to the most severe, as an image's
    label ranks its findings (one malignant finding makes a malignant image).
    Each block is classified as its most likely class; the blocks of the most
    severe class that any block is classified as compete, and the one most
    likely of that class wins. So an image with a benign and a malignant
    finding is read at the malignant one, however sure the benign one is;
    :func:`most_suspicious_patch` reads it at whichever is less normal. With
    no lesion block, the least normal block wins, as there.
    """
    probabilities, on_breast = _patch_blocks(logits, cells, patch_cells)
    background = list(classes).index(BACKGROUND_CLASS) if BACKGROUND_CLASS in classes else None
    winners = probabilities.argmax(axis=0)
    for c in reversed(range(len(classes))):
        blocks = on_breast & (winners == c)
        if c != background and blocks.any():
            return _block(probabilities, np.where(blocks, probabilities[c], -np.inf))
    return _least_normal(probabilities, on_breast, classes)
