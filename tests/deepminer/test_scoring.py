"""deepminer.scoring against brute-force loops on hand-made maps: the image-level scores /explain returns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepminer.imaging import network_input, resize
from deepminer.scoring import (
    DEFAULT_SCORE_RULE,
    SCORE_RULES,
    breast_cells,
    classifier_probabilities,
    image_scores,
    input_gray,
)
from deepminer.tissue import tissue_mask

CLASSES = ("normal", "benign", "malignant")


def _softmax_loop(z: list[float]) -> list[float]:
    top = max(z)
    e = [math.exp(v - top) for v in z]
    return [v / sum(e) for v in e]


def _hand_made(seed: int = 0, shape: tuple[int, int] = (5, 7)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits ``(3, h, w)``, their per-cell softmax by loops, and a breast of cells on the left of the grid."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(3, *shape)).astype(np.float32)
    maps = np.empty_like(logits)
    for i in range(shape[0]):
        for j in range(shape[1]):
            maps[:, i, j] = _softmax_loop([float(v) for v in logits[:, i, j]])
    cells = np.zeros(shape, dtype=bool)
    cells[1:4, :3] = True
    return logits, maps, cells


def _breast_peak_loop(maps: np.ndarray, cells: np.ndarray, classes: tuple[str, ...]) -> list[float]:
    """Max over breast cells per class, min for ``normal``; every cell when no cell is breast."""
    out = []
    for c, name in enumerate(classes):
        values = [
            float(maps[c, i, j])
            for i in range(maps.shape[1])
            for j in range(maps.shape[2])
            if cells[i, j] or not cells.any()
        ]
        out.append(min(values) if name == "normal" else max(values))
    return out


def test_breast_peak_is_the_max_over_breast_cells_and_normal_the_min() -> None:
    logits, maps, cells = _hand_made()
    # A lesion class peaking off the breast must not lift the score.
    logits[2, 0, 6] = 30.0
    maps[:, 0, 6] = _softmax_loop([float(v) for v in logits[:, 0, 6]])
    scores = image_scores(maps, logits, cells, classes=CLASSES, rule="breast_peak")
    np.testing.assert_allclose(scores, _breast_peak_loop(maps, cells, CLASSES), rtol=1e-6)
    assert scores[2] < 0.99 < maps[2].max()
    assert scores.shape == (3,) and DEFAULT_SCORE_RULE == "breast_peak"
    np.testing.assert_allclose(image_scores(maps, logits, cells, classes=CLASSES), scores)


def test_a_lesion_in_a_few_breast_cells_outranks_the_mean() -> None:
    """One malignant breast cell of 35 makes malignant the predicted class, where the mean still says normal."""
    logits = np.zeros((3, 5, 7), dtype=np.float32)
    logits[0] = 3.0
    logits[2, 2, 1] = 8.0
    maps = np.stack([np.asarray(_softmax_loop(list(logits[:, i, j])), dtype=np.float32)
                     for i in range(5) for j in range(7)], axis=1).reshape(3, 5, 7)
    cells = np.ones((5, 7), dtype=bool)
    scores = image_scores(maps, logits, cells, classes=CLASSES)
    assert CLASSES[int(np.argmax(scores))] == "malignant"
    assert CLASSES[int(np.argmax(classifier_probabilities(logits)))] == "normal"


def test_without_breast_cells_every_cell_counts() -> None:
    logits, maps, _ = _hand_made(seed=1)
    none = np.zeros(maps.shape[1:], dtype=bool)
    scores = image_scores(maps, logits, none, classes=CLASSES, rule="breast_peak")
    np.testing.assert_allclose(scores, _breast_peak_loop(maps, none, CLASSES), rtol=1e-6)
    np.testing.assert_allclose(scores, [maps[0].min(), maps[1].max(), maps[2].max()], rtol=1e-6)


def test_without_a_normal_class_every_class_scores_its_peak() -> None:
    logits, maps, cells = _hand_made(seed=2)
    classes = ("benign", "malignant", "other")
    scores = image_scores(maps, logits, cells, classes=classes)
    np.testing.assert_allclose(scores, [maps[c][cells].max() for c in range(3)], rtol=1e-6)


def test_classifier_rule_is_the_softmax_of_the_mean_logit() -> None:
    logits, maps, cells = _hand_made(seed=3)
    h, w = logits.shape[1:]
    means = [sum(float(logits[c, i, j]) for i in range(h) for j in range(w)) / (h * w) for c in range(3)]
    expected = _softmax_loop(means)
    np.testing.assert_allclose(classifier_probabilities(logits), expected, rtol=1e-5)
    scores = image_scores(maps, logits, cells, classes=CLASSES, rule="classifier")
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_mean_of_maps_is_the_patch_classifier() -> None:
    """With a linear head, softmax of the mean logit map = the classifier on globally average-pooled features."""
    rng = np.random.default_rng(4)
    features = rng.gamma(2.0, 1.0, size=(6, 4, 5))  # A_k(x, y), K = 6 units
    weight, bias = rng.normal(size=(3, 6)), rng.normal(size=3)
    logit_map = np.einsum("ck,kxy->cxy", weight, features) + bias[:, None, None]  # the FCN's 1x1 conv
    pooled = [sum(features[k, i, j] for i in range(4) for j in range(5)) / 20 for k in range(6)]
    classifier = _softmax_loop([sum(weight[c, k] * pooled[k] for k in range(6)) + bias[c] for c in range(3)])
    np.testing.assert_allclose(classifier_probabilities(logit_map), classifier, rtol=1e-9)


def test_breast_cells_sample_the_tissue_mask_at_each_cells_centre_pixel() -> None:
    gray = np.full((150, 200), 0.02, dtype=np.float32)
    gray[:, :90] = 0.7  # the breast, on the left
    gray[100:, 90:130] = 0.6
    h, w = math.ceil(150 / 32), math.ceil(200 / 32)
    cells = breast_cells(gray, (h, w))
    mask = tissue_mask(gray)
    expected = np.array([[bool(mask[32 * i, 32 * j]) for j in range(w)] for i in range(h)])
    np.testing.assert_array_equal(cells, expected)
    assert cells[:, :3].all() and cells[4, 3:5].all()
    assert cells.sum() == 5 * 3 + 2  # columns 96 and 128 reach the lower patch in row 128 only


def test_input_gray_undoes_the_normalisation_of_the_network_input() -> None:
    rng = np.random.default_rng(5)
    pixels = rng.uniform(size=(90, 60)).astype(np.float32)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = network_input(pixels, short_side=64, mean=mean, std=std)
    np.testing.assert_allclose(input_gray(x, mean, std), resize(pixels, x.shape[2:]), atol=1e-6)


def test_bad_arguments_are_refused_with_what_was_received() -> None:
    logits, maps, cells = _hand_made()
    assert SCORE_RULES == ("breast_peak", "classifier", "patch_peak", "worst_patch")
    with pytest.raises(ValueError, match="got 'mean'"):
        image_scores(maps, logits, cells, classes=CLASSES, rule="mean")
    with pytest.raises(ValueError, match=r"cells must be the grid \(5, 7\), got \(7, 5\)"):
        image_scores(maps, logits, cells.T, classes=CLASSES)
    with pytest.raises(ValueError, match=r"got shape \(3, 35\)"):
        classifier_probabilities(logits.reshape(3, -1))
    with pytest.raises(ValueError, match="patch_cells must be at least 1, got 0"):
        image_scores(maps, logits, cells, classes=CLASSES, rule="patch_peak", patch_cells=0)
    with pytest.raises(ValueError, match="patch_cells must be at least 1, got 0"):
        image_scores(maps, logits, cells, classes=CLASSES, rule="worst_patch", patch_cells=0)


def _blocks_loop(logits: np.ndarray, cells: np.ndarray, k: int) -> list[list[float]]:
    """Every k x k block inside the grid by loops, the softmax of its mean logits; those with half or more of their
    cells on the breast (all blocks when none has)."""
    c_n, h, w = logits.shape
    k = min(k, h, w)
    blocks = []
    for i in range(h - k + 1):
        for j in range(w - k + 1):
            mean = [sum(float(logits[c, i + a, j + b]) for a in range(k) for b in range(k)) / (k * k) for c in range(c_n)]
            breast = sum(bool(cells[i + a, j + b]) for a in range(k) for b in range(k)) / (k * k)
            blocks.append((_softmax_loop(mean), breast >= 0.5))
    return [p for p, on in blocks if on] or [p for p, _ in blocks]


def _patch_peak_loop(logits: np.ndarray, cells: np.ndarray, classes: tuple[str, ...], k: int) -> list[float]:
    """Of _blocks_loop's blocks, the one least normal (most lesion-like without normal)."""
    candidates = _blocks_loop(logits, cells, k)
    if "normal" in classes:
        return min(candidates, key=lambda p: p[classes.index("normal")])
    return max(candidates, key=max)


@pytest.mark.parametrize("rule", ["patch_peak", "worst_patch"])
@pytest.mark.parametrize("k", [1, 2, 3, 9])
def test_patch_rules_are_the_classifier_at_their_block_on_the_breast(k: int, rule: str) -> None:
    """patch_peak: the least normal block; worst_patch: the block most likely of the most severe class found."""
    loop = {"patch_peak": _patch_peak_loop, "worst_patch": _worst_patch_loop}[rule]
    for seed in range(5):
        logits, maps, cells = _hand_made(seed=seed)
        scores = image_scores(maps, logits, cells, classes=CLASSES, rule=rule, patch_cells=k)
        np.testing.assert_allclose(scores, loop(logits, cells, CLASSES, k), rtol=1e-5)
        no_breast = np.zeros_like(cells)
        scores = image_scores(maps, logits, no_breast, classes=CLASSES, rule=rule, patch_cells=k)
        np.testing.assert_allclose(scores, loop(logits, no_breast, CLASSES, k), rtol=1e-5)
        two = ("benign", "malignant")
        scores = image_scores(maps[1:], logits[1:], cells, classes=two, rule=rule, patch_cells=k)
        np.testing.assert_allclose(scores, loop(logits[1:], cells, two, k), rtol=1e-5)


def test_patch_peak_on_a_patch_sized_image_is_the_patch_classifier() -> None:
    """A grid of exactly one block: the patch classifier's probabilities (training/context.py's patch in its image)."""
    logits, maps, cells = _hand_made(seed=6, shape=(4, 4))
    scores = image_scores(maps, logits, cells, classes=CLASSES, rule="patch_peak", patch_cells=4)
    np.testing.assert_allclose(scores, classifier_probabilities(logits), rtol=1e-6)


def test_patch_peak_reads_a_lesion_by_its_patch_not_by_its_loudest_cell() -> None:
    """A benign lesion of four cells, one of which leans malignant: each class's peak cell calls it malignant,
    the patch around it benign."""
    logits = np.zeros((3, 6, 6), dtype=np.float32)
    logits[1, 2:4, 2:4] = 3.0  # benign over the lesion's four cells
    logits[2, 2, 2] = 6.0  # one of them louder for malignant
    cells = np.ones((6, 6), dtype=bool)
    maps = np.exp(logits) / np.exp(logits).sum(axis=0)
    peak = image_scores(maps, logits, cells, classes=CLASSES, rule="breast_peak")
    patch = image_scores(maps, logits, cells, classes=CLASSES, rule="patch_peak", patch_cells=2)
    assert CLASSES[int(np.argmax(peak))] == "malignant"
    assert CLASSES[int(np.argmax(patch))] == "benign"


def _worst_patch_loop(logits: np.ndarray, cells: np.ndarray, classes: tuple[str, ...], k: int) -> list[float]:
    """Of _blocks_loop's blocks, those classified as the most severe class that any of them is classified as
    (classes run from normal to malignant), and of those the most likely of it; with no lesion block,
    _patch_peak_loop's block."""
    c_n = logits.shape[0]
    candidates = _blocks_loop(logits, cells, k)
    for c in range(c_n - 1, -1, -1):
        if classes[c] == "normal":
            continue
        of_class = [p for p in candidates if max(range(c_n), key=lambda x: p[x]) == c]
        if of_class:
            return max(of_class, key=lambda p: p[c])
    return _patch_peak_loop(logits, cells, classes, k)


def test_worst_patch_reads_an_image_at_its_malignant_finding_however_sure_the_benign_one_is() -> None:
    """A sure benign finding and a less sure malignant one: patch_peak reads the image at the less normal benign
    block, worst_patch at the malignant one; with only normal blocks both take the least normal block."""
    logits = np.zeros((3, 8, 8), dtype=np.float32)
    logits[0] = 4.0  # normal tissue everywhere
    logits[1, 1:3, 1:3] = 12.0  # a benign finding, very sure
    logits[2, 5:7, 5:7] = 6.0  # a malignant finding, less so
    cells = np.ones((8, 8), dtype=bool)
    maps = np.exp(logits) / np.exp(logits).sum(axis=0)
    suspicious = image_scores(maps, logits, cells, classes=CLASSES, rule="patch_peak", patch_cells=2)
    worst = image_scores(maps, logits, cells, classes=CLASSES, rule="worst_patch", patch_cells=2)
    assert CLASSES[int(np.argmax(suspicious))] == "benign"
    assert CLASSES[int(np.argmax(worst))] == "malignant"
    np.testing.assert_allclose(worst, _softmax_loop([4.0, 0.0, 6.0]), rtol=1e-6)
    logits[1:] = 0.0
    normal_only = image_scores(maps, logits, cells, classes=CLASSES, rule="worst_patch", patch_cells=2)
    np.testing.assert_allclose(normal_only, image_scores(maps, logits, cells, classes=CLASSES, rule="patch_peak",
                                                         patch_cells=2))
