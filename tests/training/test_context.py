"""Patches classified inside their whole image: exact to the FCN, cells right, flips consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepminer.fcn import build_classifier, to_fcn
from deepminer.grid import NETWORK_STRIDE, feature_grid_shape
from training.config import TrainConfig
from training.context import ImageContext, PatchesInImage, cellwise_normal, moved_boxes, patch_cells
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
    np.testing.assert_array_equal(patch_cells(moved_boxes(boxes, shape, flip_h=True), shape), plain[:, :, ::-1])
    np.testing.assert_array_equal(patch_cells(moved_boxes(boxes, shape, flip_v=True), shape), plain[:, ::-1, :])


def test_transposed_images_carry_their_cells_along() -> None:
    """augment_transpose in whole-image training: pixels and patch cells swap rows and columns together, after
    the flips, so a patch's cells still cover its pixels (sizes 32 (n - 1) + 1 map cell centres onto each other)."""
    rng = np.random.default_rng(2)
    shapes = [(32 * 6 + 1, 32 * 4 + 1), (32 * 5 + 1, 32 * 7 + 1)]
    images = tuple(rng.random(s).astype(np.float16) for s in shapes)
    boxes = np.array([[0, 0, 64], [64, 32, 96], [32, 96, 64], [96, 128, 64]])
    context = ImageContext(images=images, image_index=np.array([0, 0, 1, 1]), boxes=boxes)
    labels = np.array([0, 1, 2, 0])
    for flips in [(False, False), (True, False), (False, True), (True, True)]:
        pixels, cells, out_labels, members = context.batch([0, 1], labels, flips=[flips, flips],
                                                           transposes=[True, False])
        assert pixels.shape == (2, 32 * 5 + 1, 32 * 7 + 1)  # image 0 transposed is (129, 193)
        first = images[0].astype(np.float32)[:, ::-1] if flips[0] else images[0].astype(np.float32)
        first = first[::-1, :] if flips[1] else first
        np.testing.assert_array_equal(pixels[0, : shapes[0][1], : shapes[0][0]], first.T)
        assert not pixels[0, shapes[0][1] :].any() and not pixels[0, :, shapes[0][0] :].any()
        flipped = [moved_boxes(boxes[2 * n : 2 * n + 2], shapes[n], flip_h=flips[0], flip_v=flips[1]) for n in (0, 1)]
        own = patch_cells(flipped[0], shapes[0]).transpose(0, 2, 1)
        np.testing.assert_array_equal(cells[0, :2, : own.shape[1], : own.shape[2]], own)
        np.testing.assert_array_equal(cells[1, :2], patch_cells(flipped[1], shapes[1]))
        assert out_labels.tolist() == [[0, 1], [2, 0]]
        assert [m.tolist() for m in members] == [[0, 1], [2, 3]]
    # Unflipped, the transpose is the transposed boxes' cells in the transposed image.
    _, cells, _, _ = context.batch([0], labels, transposes=[True])
    np.testing.assert_array_equal(cells[0], patch_cells(boxes[:2][:, [1, 0, 2]], shapes[0][::-1]))


def test_shifted_images_carry_their_cells_along_and_centre_them_over_every_phase() -> None:
    """augment_shift: rows and columns are cut off the image's top and left, so it moves up and left under the
    layer4 grid, and its patches' cells follow. At the phase of the data (boxes on multiples of 64 px) a 128 px
    patch's four cells are centred 15.5 px above its centre; over the 32 phases the shift draws, 0.5 px: the
    supervision no longer leans up and left."""
    rng = np.random.default_rng(3)
    shape = (32 * 6 + 1, 32 * 5 + 1)
    image = rng.random(shape).astype(np.float16)
    box = np.array([[64, 0, 128]])
    context = ImageContext(images=(image,), image_index=np.array([0]), boxes=box)
    pixels, cells, _, _ = context.batch([0], np.array([1]), shifts=[(5, 9)])
    assert pixels.shape == (1, shape[0] - 5, shape[1] - 9)
    np.testing.assert_array_equal(pixels[0], image.astype(np.float32)[5:, 9:])
    np.testing.assert_array_equal(cells[0], patch_cells(np.array([[59, -9, 128]]), (shape[0] - 5, shape[1] - 9)))
    # Flipped, transposed and shifted at once: the box goes where its pixels go.
    pixels, cells, _, _ = context.batch([0], np.array([1]), flips=[(True, True)], transposes=[True], shifts=[(3, 7)])
    np.testing.assert_array_equal(pixels[0], image.astype(np.float32)[::-1, ::-1].T[3:, 7:])
    flipped_top, flipped_left = shape[0] - 64 - 128, shape[1] - 0 - 128
    expected = patch_cells(np.array([[flipped_left - 3, flipped_top - 7, 128]]), (shape[1] - 3, shape[0] - 7))
    np.testing.assert_array_equal(cells[0], expected)
    with pytest.raises(ValueError, match="must leave some"):
        context.batch([0], np.array([1]), shifts=[(shape[0], 0)])

    def offset(shift: int) -> float:
        _, c, _, _ = context.batch([0], np.array([1]), shifts=[(shift, 0)])
        rows = np.nonzero(c[0, 0].any(axis=1))[0]
        return float(NETWORK_STRIDE * rows.mean() - (64 - shift + 63.5))

    assert offset(0) == -15.5
    assert abs(np.mean([offset(s) for s in range(NETWORK_STRIDE)])) <= 0.5


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


def test_image_batches_shift_and_transpose_only_when_asked(phantom_records: list[ImageRecord]) -> None:
    from training.batches import image_batches
    from training.distributed import DistContext

    config = TrainConfig(patch_size=32, patch_context="image", images_per_batch=2, augment_flips=True,
                         patch_rule=PatchRule(min_tissue=0.0))
    train = cut_patches(phantom_records[:4], rule=config.patch_rule, patch_size=32, progress=False,
                        patch_context="image")
    ctx = DistContext.single(torch.device("cpu"))
    plain = list(image_batches(train, config, np.random.default_rng(0), ctx, None))
    moved = list(image_batches(train, config.replace(augment_shift=True), np.random.default_rng(0), ctx, None))
    turned = list(image_batches(train, config.replace(augment_shift=True, augment_transpose=True),
                                np.random.default_rng(0), ctx, None))
    assert len(plain) == len(moved) == len(turned) == 2
    largest = max(image.shape for image in train.context.images)
    assert all(b.pixels.shape[1:] == largest for b in plain)  # plain: the images' own size
    # Shifted: no batch is larger than the images and some is smaller; with the transposes too, the patches
    # still carry their labels, the same as without (the image order is drawn first, from the same stream).
    assert all(b.pixels.shape[1] <= largest[0] and b.pixels.shape[2] <= largest[1] for b in moved)
    assert any(b.pixels.shape[1:] != largest for b in moved)
    for a, b in zip(plain, turned):
        np.testing.assert_array_equal(np.sort(a.labels[a.labels >= 0]), np.sort(b.labels[b.labels >= 0]))
        assert (b.extra.sum(axis=(2, 3)) > 0).sum() == (b.labels >= 0).sum()
    with pytest.raises(ValueError, match="augment_shift"):
        TrainConfig(augment_shift=True)  # bare patches have nothing to shift under


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
