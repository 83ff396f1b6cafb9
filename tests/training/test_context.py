"""Patches classified inside their whole image: exact to the FCN, cells right, flips consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepminer.fcn import build_classifier, to_fcn
from deepminer.grid import NETWORK_STRIDE, feature_grid_shape
from training.config import TrainConfig
from training.context import PatchesInImage, cellwise_normal, patch_cells
from training.data import cut_patches
from training.manifest import ImageRecord
from training.patches import CLASSES, PatchRule
from training.train import fine_tune, patch_probabilities


def _brute_cells(box: tuple[int, int, int], shape: tuple[int, int]) -> np.ndarray:
    h, w = feature_grid_shape(*shape)
    top, left, side = box
    out = np.zeros((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            if top <= NETWORK_STRIDE * i < top + side and left <= NETWORK_STRIDE * j < left + side:
                out[i, j] = 1.0
    return out


def test_patch_cells_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    shape = (200, 290)
    boxes = np.stack([rng.integers(0, 150, 40), rng.integers(0, 230, 40), rng.integers(33, 90, 40)], axis=1)
    cells = patch_cells(boxes, shape)
    for box, got in zip(boxes, cells):
        np.testing.assert_array_equal(got, _brute_cells(tuple(int(v) for v in box), shape))
    # A patch narrower than a cell that holds no cell centre gets the cell nearest its centre.
    assert patch_cells(np.array([[40, 40, 10]]), shape)[0].nonzero() == (np.array([1]), np.array([1]))


def test_flipped_cells_are_the_mirrored_cells() -> None:
    # With H, W = 32 (n - 1) + 1, mirroring maps cell centres onto cell centres.
    shape = (32 * 6 + 1, 32 * 8 + 1)
    rng = np.random.default_rng(1)
    boxes = np.stack([rng.integers(0, 120, 30), rng.integers(0, 180, 30), rng.integers(33, 70, 30)], axis=1)
    plain = patch_cells(boxes, shape)
    np.testing.assert_array_equal(patch_cells(boxes, shape, flip_h=True), plain[:, :, ::-1])
    np.testing.assert_array_equal(patch_cells(boxes, shape, flip_v=True), plain[:, ::-1, :])


def test_patch_logits_are_the_mean_of_the_fcn_map_over_their_cells() -> None:
    torch.manual_seed(0)
    classifier = build_classifier(depth=18, num_classes=3).eval()
    x = torch.randn(2, 3, 160, 224)
    boxes = np.array([[0, 0, 64], [32, 64, 96], [100, 150, 64]])
    cells = torch.from_numpy(np.stack([patch_cells(boxes, (160, 224))] * 2))
    with torch.no_grad():
        got = PatchesInImage(classifier)(x, cells)
        logits, _ = to_fcn(classifier)(x)
    for n in range(2):
        for p in range(3):
            mask = cells[n, p].bool()
            np.testing.assert_allclose(got[n, p].numpy(), logits[n][:, mask].mean(dim=1).numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="cells must be"):
        PatchesInImage(classifier)(x, cells[:, :, :2])


def test_cellwise_normal_keeps_lesion_patches_and_splits_the_rest() -> None:
    cells = np.zeros((3, 3, 3), np.float32)
    cells[0, 0:2, 0:2] = 1  # normal
    cells[1, 1:3, 1:3] = 1  # malignant
    cells[2, 0:2, 1:3] = 1  # normal
    out, labels = cellwise_normal(cells, np.array([0, 2, 0]))
    assert labels.tolist() == [2, 0, 0, 0, 0]
    np.testing.assert_array_equal(out[0], cells[1])
    # The normal patches' cells, less those under the malignant patch, one per row, row-major.
    assert [tuple(np.argwhere(c)[0]) for c in out[1:]] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert all(c.sum() == 1 for c in out[1:])


def test_image_context_training_holds_the_reference_row_at_zero(phantom_records: list[ImageRecord]) -> None:
    config = TrainConfig(depth=18, patch_size=32, epochs=1, lr=0.01, lr_decay_epoch=None, device="cpu",
                         patch_context="image", images_per_batch=4, normal_cells=True, reference_class="normal",
                         patch_rule=PatchRule(min_tissue=0.0))
    train = cut_patches(phantom_records[:12], rule=config.patch_rule, patch_size=32, progress=False,
                        patch_context="image")
    holdout = cut_patches(phantom_records[12:16], rule=config.patch_rule, patch_size=32, progress=False,
                          patch_context="image")
    assert train.context is not None and len(train.context.images) == 12
    model = build_classifier(depth=18, num_classes=3)
    before = model.layer1[0].conv1.weight.detach().clone()
    result = fine_tune(model, train, holdout, config, device=torch.device("cpu"), progress=False)
    fc = result.model.fc
    assert torch.count_nonzero(fc.weight[CLASSES.index("normal")]) == 0
    assert float(fc.bias.detach()[CLASSES.index("normal")]) == 0.0
    assert torch.count_nonzero(fc.weight[CLASSES.index("malignant")]) > 0
    assert not torch.equal(before, result.model.layer1[0].conv1.weight)
    assert result.model.fc.weight.is_contiguous()
    # Hold-out patch probabilities come from one forward pass per image and sum to 1.
    probs = patch_probabilities(result.model, holdout, batch_size=8, device=torch.device("cpu"))
    assert probs.shape == (len(holdout), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_max_pooling_takes_each_class_peak_over_the_patch_cells() -> None:
    torch.manual_seed(1)
    classifier = build_classifier(depth=18, num_classes=3).eval()
    x = torch.randn(1, 3, 128, 160)
    boxes = np.array([[0, 0, 64], [32, 64, 96]])
    cells = torch.from_numpy(patch_cells(boxes, (128, 160))[None])
    with torch.no_grad():
        got = PatchesInImage(classifier)(x, cells, torch.tensor([[True, False]]))
        mean_only = PatchesInImage(classifier)(x, cells)
        logits, _ = to_fcn(classifier)(x)
    mask = cells[0, 0].bool()
    np.testing.assert_allclose(got[0, 0].numpy(), logits[0][:, mask].amax(dim=1).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[0, 1].numpy(), mean_only[0, 1].numpy(), rtol=1e-6)
