"""Patches classified inside their whole image: exact to the FCN, cells right, flips consistent."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

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


def test_overlap_cell_weights_against_pixel_counts() -> None:
    """cell_weights "overlap": each cell weighs the share of its footprint (the 32 x 32 pixels from 32 i - 16 on)
    that the patch covers, counted pixel by pixel here."""
    rng = np.random.default_rng(3)
    shape = (200, 290)
    h, w = feature_grid_shape(*shape)
    boxes = np.stack([rng.integers(0, 150, 25), rng.integers(0, 230, 25), rng.integers(20, 90, 25)], axis=1)
    cells = patch_cells(boxes, shape, "overlap")
    half = NETWORK_STRIDE // 2
    for (top, left, side), got in zip(boxes, cells):
        inside = np.zeros((NETWORK_STRIDE * h + half, NETWORK_STRIDE * w + half), bool)  # pixels from -16 on
        inside[top + half : top + side + half, left + half : left + side + half] = True
        expected = inside[: NETWORK_STRIDE * h, : NETWORK_STRIDE * w].reshape(h, NETWORK_STRIDE, w, NETWORK_STRIDE)
        np.testing.assert_allclose(got, expected.mean(axis=(1, 3)), atol=1e-6)
    with pytest.raises(ValueError, match="cell weights must be one of"):
        patch_cells(boxes, shape, "nearest")


@pytest.mark.parametrize("phase", [0, 7, 16, 27])
def test_overlap_weights_are_centred_on_the_patch_at_every_phase(phase: int) -> None:
    """The "centre" rule's cells of a 128 px patch starting on a cell centre sit 16 px above and left of its
    centre (the CAM learns that lean); "overlap" weights are centred at every phase, and a patch whose edges lie
    halfway between cell centres gets exactly the "centre" rule's 4 x 4 cells."""
    shape = (731, 512)
    boxes = np.array([[64 + phase, 128 + phase, 128], [320 + phase, 32 + phase, 128]])
    ys, xs = np.mgrid[: feature_grid_shape(*shape)[0], : feature_grid_shape(*shape)[1]] * NETWORK_STRIDE
    for rule in ("centre", "overlap"):
        cells = patch_cells(boxes, shape, rule)
        for (top, left, side), c in zip(boxes, cells):
            centre = np.array([(c * ys).sum(), (c * xs).sum()]) / c.sum()
            lean = centre - (np.array([top, left]) + side / 2)
            if rule == "overlap":
                np.testing.assert_allclose(lean, [0.0, 0.0], atol=1e-4)
            elif phase == 0:
                np.testing.assert_allclose(lean, [-16.0, -16.0])
    edges_between_centres = np.array([[48, 80, 128]])
    np.testing.assert_array_equal(patch_cells(edges_between_centres, shape, "overlap"),
                                  patch_cells(edges_between_centres, shape, "centre"))


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


def test_overlap_weighted_patch_logits_are_the_weighted_mean_of_the_fcn_map() -> None:
    """With cell_weights "overlap", an image context hands out the overlap weights, and a patch's logits are the
    FCN's logit map averaged with them: still the classifier's own weights, nothing but the pooling changes."""
    torch.manual_seed(0)
    classifier = build_classifier(depth=18, num_classes=3).eval()
    rng = np.random.default_rng(4)
    image = rng.random((160, 224)).astype(np.float16)
    boxes = np.array([[0, 0, 64], [40, 70, 96], [100, 150, 64]])
    context = ImageContext(images=(image,), image_index=np.zeros(3, np.int64), boxes=boxes, cell_weights="overlap")
    pixels, cells, _, _ = context.batch([0], np.array([1, 2, 0]))
    np.testing.assert_array_equal(cells[0], patch_cells(boxes, image.shape, "overlap"))
    assert not np.array_equal(cells[0], patch_cells(boxes, image.shape))
    x = torch.from_numpy(pixels)[:, None].repeat(1, 3, 1, 1)
    with torch.no_grad():
        got = PatchesInImage(classifier)(x, torch.from_numpy(cells))
        logits, _ = to_fcn(classifier)(x)
    for p in range(3):
        w = torch.from_numpy(cells[0, p])
        expected = (logits[0] * w).sum(dim=(1, 2)) / w.sum()
        np.testing.assert_allclose(got[0, p].numpy(), expected.numpy(), rtol=1e-4, atol=1e-4)


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


@pytest.mark.parametrize("optimiser", ["sgd", "adamw"])
def test_image_context_training_holds_the_reference_row_at_zero(
    phantom_records: list[ImageRecord], optimiser: str
) -> None:
    """With SGD (momentum, weight decay) and with AdamW (its moments, decoupled weight decay) alike, the reference
    row gets no gradient and stays exactly zero while the other weights train."""
    config = TrainConfig(depth=18, patch_size=32, epochs=1, lr=0.01 if optimiser == "sgd" else 0.001,
                         lr_decay_epoch=None, device="cpu", patch_context="image", images_per_batch=4,
                         normal_cells=True, reference_class="normal", patch_rule=PatchRule(min_tissue=0.0),
                         optimiser=optimiser, weight_decay=1e-4 if optimiser == "sgd" else 0.05)
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
    assert [(b.step, b.steps) for b in plain] == [(0, 2), (1, 2)]  # where each step lies in its epoch
    odd = list(image_batches(train, config.replace(images_per_batch=3), np.random.default_rng(0), ctx, None))
    assert [(len(b.pixels), b.step, b.steps) for b in odd] == [(3, 0, 2), (1, 1, 2)]
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


def test_a_crop_is_a_window_of_the_moved_image_with_the_patches_wholly_inside_it() -> None:
    """``crop``: the window starts at the shift; patches reaching outside it are left out, with their labels."""
    rng = np.random.default_rng(4)
    shape = (32 * 7 + 1, 32 * 6 + 1)
    image = rng.random(shape).astype(np.float16)
    boxes = np.array([[64, 0, 64], [64, 64, 64], [0, 0, 64], [160, 128, 64]])
    context = ImageContext(images=(image,), image_index=np.array([0, 0, 0, 0]), boxes=boxes)
    labels = np.array([1, 2, 0, 1])
    pixels, cells, out_labels, (members,) = context.batch([0], labels, shifts=[(40, 0)], crop=128)
    assert pixels.shape == (1, 128, 128)
    np.testing.assert_array_equal(pixels[0], image.astype(np.float32)[40:168, :128])
    # Rows 40-167, columns 0-127: the first two patches lie inside; the third starts above, the fourth beyond.
    assert members.tolist() == [0, 1] and out_labels[0].tolist() == [1, 2]
    np.testing.assert_array_equal(cells[0], patch_cells(np.array([[24, 0, 64], [24, 64, 64]]), (128, 128)))
    # Mirrored left-right and cut at the image's edge: the window is what is left of the image.
    pixels, cells, out_labels, (members,) = context.batch([0], labels, flips=[(True, False)], shifts=[(120, 100)],
                                                          crop=128)
    assert pixels.shape == (1, 105, 93)
    np.testing.assert_array_equal(pixels[0], image.astype(np.float32)[:, ::-1][120:, 100:])
    assert members.tolist() == []  # the fourth patch, mirrored to columns 1-64, lies left of the window
    with pytest.raises(ValueError, match="crop"):
        context.batch([0], labels, crop=0)


def test_lesion_crops_hold_their_lesion_patch_and_draw_every_lesion_class_alike(
    phantom_records: list[ImageRecord],
) -> None:
    from training.batches import image_batches, lesion_crops
    from training.distributed import DistContext

    config = TrainConfig(patch_size=32, patch_context="image", images_per_batch=2, augment_flips=True,
                         augment_transpose=True, normal_cells=True, lesion_crops=64, lesion_crop_size=64,
                         patch_rule=PatchRule(min_tissue=0.0))
    train = cut_patches(phantom_records[:8], rule=config.patch_rule, patch_size=32, progress=False,
                        patch_context="image")
    ctx = DistContext.single(torch.device("cpu"))
    crops = lesion_crops(train, config, np.random.default_rng(0), ctx)
    assert crops.pixels.shape[0] == 64 and crops.pixels.shape[1:] == (64, 64)
    lesion_rows = crops.labels > 0
    # Every crop keeps at least its own lesion patch, with its cells; benign and malignant are drawn alike.
    assert lesion_rows.any(axis=1).all()
    assert np.all(crops.extra[lesion_rows].sum(axis=(1, 2)) > 0)
    first = crops.labels[:, 0]
    assert 20 <= int((first == CLASSES.index("benign")).sum()) <= 44
    # Every crop's pixels are a window of one of the training images (some mirror or transpose of it).
    assert all(np.isclose(crop, 0).mean() < 1 for crop in crops.pixels)
    # In the epoch's batches, the crops ride along with the images and count in the loss normaliser.
    plain = list(image_batches(train, config.replace(lesion_crops=0), np.random.default_rng(0), ctx, None))
    batches = list(image_batches(train, config.replace(lesion_crops=3), np.random.default_rng(0), ctx, None))
    assert all(b.crops is None for b in plain) and all(b.crops.pixels.shape[0] == 3 for b in batches)
    # The images of the first batch are drawn before any crop, from the same stream.
    np.testing.assert_array_equal(plain[0].pixels, batches[0].pixels)
    b = batches[0]
    assert b.global_patches == int((b.labels >= 0).sum() + (b.crops.labels >= 0).sum())
    with pytest.raises(ValueError, match="lesion_crops"):
        TrainConfig(lesion_crops=2)  # bare patches have no image to cut a window from
    with pytest.raises(ValueError, match="lesion_crop_size"):
        TrainConfig(patch_context="image", patch_size=64, lesion_crops=2, lesion_crop_size=32)


def test_a_step_with_crops_is_the_step_on_one_batch_of_images_and_crops() -> None:
    """Images and crops classified together: the same update, loss and BatchNorm running statistics as one stacked
    batch (crops of the images' size here, so that they can be stacked), and not the update without the crops."""
    from training.train import train_step

    torch.manual_seed(2)
    base = build_classifier(depth=18, num_classes=3).double()  # float64: no rounding to tell the paths apart
    images, crops = torch.randn(2, 3, 96, 128, dtype=torch.float64), torch.randn(3, 3, 96, 128, dtype=torch.float64)
    boxes = np.array([[0, 0, 64], [32, 64, 64]])
    image_cells = torch.from_numpy(np.stack([patch_cells(boxes, (96, 128))] * 2)).double()
    crop_cells = torch.from_numpy(np.stack([patch_cells(boxes, (96, 128))] * 3)).double()
    image_labels, crop_labels = torch.tensor([[0, 2], [1, -100]]), torch.tensor([[1, 0], [2, 0], [1, 1]])
    weight = torch.tensor([0.5, 2.0, 3.0])
    total = float(weight[image_labels[image_labels >= 0]].sum() + weight[crop_labels.reshape(-1)].sum())

    def step(x: torch.Tensor, y: torch.Tensor, cells: torch.Tensor, **more: object) -> tuple[float, nn.Module]:
        model = copy.deepcopy(base)
        loss = train_step(PatchesInImage(model).train(), torch.optim.SGD(model.parameters(), lr=0.1), x, y,
                          global_batch=total, extra=cells, class_weight=weight, **more)
        return loss, model

    together, joint = step(images, image_labels, image_cells, more=[(crops, crop_labels, crop_cells)])
    stacked, one = step(torch.cat([images, crops]), torch.cat([image_labels, crop_labels]),
                        torch.cat([image_cells, crop_cells]))
    assert together == pytest.approx(stacked, rel=1e-5)
    for (name, got), want in zip(joint.state_dict().items(), one.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)
    _, alone = step(images, image_labels, image_cells)
    assert not torch.allclose(alone.fc.weight, joint.fc.weight)


def test_the_lesion_pair_loss_weighs_benign_against_malignant_alone() -> None:
    """lesion_pair_weight: each lesion patch adds -log softmax((benign, malignant) logits)[its class], weighted by
    its class; normal patches and padding add nothing, and normal's logit takes no part."""
    from training.train import lesion_pair_loss, train_step

    logits = torch.tensor([[[0.0, 1.0, 2.0], [5.0, 3.0, 1.0], [9.0, 0.5, 0.5], [1.0, 2.0, 3.0]]], dtype=torch.float64)
    labels = torch.tensor([[1, 2, 0, -100]])
    weight = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    expected = 2.0 * np.log1p(np.exp(1.0)) + 3.0 * np.log1p(np.exp(2.0))
    assert float(lesion_pair_loss(logits, labels, weight)) == pytest.approx(expected)
    shifted_normal = logits + torch.tensor([7.0, 0.0, 0.0], dtype=torch.float64)
    assert float(lesion_pair_loss(shifted_normal, labels, weight)) == pytest.approx(expected)
    assert float(lesion_pair_loss(logits, torch.tensor([[0, 0, -100, -100]]), weight)) == 0.0

    torch.manual_seed(4)
    base = build_classifier(depth=18, num_classes=3).eval()  # eval: both steps see the same network
    x = torch.randn(1, 3, 96, 128)
    cells = torch.from_numpy(patch_cells(np.array([[0, 0, 64], [32, 64, 64]]), (96, 128))[None])
    y = torch.tensor([[1, 0]])
    weight = weight.float()
    with torch.no_grad():
        patch_logits = PatchesInImage(base)(x, cells)
    plain_loss = float(nn.functional.cross_entropy(patch_logits[0], y[0], weight=weight, reduction="sum"))
    pair = float(lesion_pair_loss(patch_logits, y, weight))
    assert pair > 0
    for pair_weight in (0.0, 1.5):
        model = copy.deepcopy(base)
        loss = train_step(PatchesInImage(model), torch.optim.SGD(model.parameters(), lr=0.1), x, y, global_batch=2.5,
                          extra=cells, class_weight=weight, lesion_pair_weight=pair_weight)
        assert loss == pytest.approx((plain_loss + pair_weight * pair) / 2.5, rel=1e-5)
    with pytest.raises(ValueError, match="lesion_pair_weight"):
        TrainConfig(lesion_pair_weight=-1.0)


def test_cell_weights_and_the_optimiser_are_checked() -> None:
    with pytest.raises(ValueError, match="cell_weights must be one of"):
        TrainConfig(cell_weights="nearest")
    with pytest.raises(ValueError, match=r"optimiser must be one of \('sgd', 'adamw'\), got 'adam'"):
        TrainConfig(optimiser="adam")
    from training.train import make_optimiser

    model = nn.Linear(2, 2)
    sgd = make_optimiser(model, TrainConfig(lr=0.1))
    adamw = make_optimiser(model, TrainConfig(optimiser="adamw", lr=0.001, weight_decay=0.05))
    assert type(sgd) is torch.optim.SGD and sgd.defaults["momentum"] == 0.9
    assert type(adamw) is torch.optim.AdamW and adamw.defaults["weight_decay"] == 0.05


@pytest.mark.parametrize("depth", [18, 50])
def test_inputs_of_several_sizes_share_one_batchnorm_batch(depth: int) -> None:
    """forward_together: each input's features are those of a batch holding all of them, residual blocks and
    Bottlenecks included; the running statistics are the union's; eval mode is the plain forward."""
    from training.batchnorm import forward_together

    torch.manual_seed(3)
    # float64: a ResNet-50's BatchNorm over a few cells turns float32 rounding into differences of 1e-3.
    base = build_classifier(depth=depth, num_classes=3).double()
    a, b = torch.randn(2, 3, 64, 96, dtype=torch.float64), torch.randn(3, 3, 64, 96, dtype=torch.float64)
    joint, stacked = copy.deepcopy(base).train(), copy.deepcopy(base).train()
    def body(m: nn.Module) -> nn.Sequential:
        return nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4)

    fa, fb = forward_together(body(joint), [a, b])
    both = body(stacked)(torch.cat([a, b]))
    torch.testing.assert_close(torch.cat([fa, fb]), both, rtol=1e-9, atol=1e-9)
    for (name, got), want in zip(joint.state_dict().items(), stacked.state_dict().values()):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=name)
    # Different sizes: the small input is normalised with the statistics of both, so alone it comes out otherwise.
    small = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    _, with_large = forward_together(body(copy.deepcopy(base).train()), [a, small])
    alone = body(copy.deepcopy(base).train())(small)
    assert with_large.shape == alone.shape and not torch.allclose(with_large, alone, atol=1e-3)
    evaluated = copy.deepcopy(base).eval()
    with torch.no_grad():
        (got,) = forward_together(body(evaluated), [small])
        torch.testing.assert_close(got, body(evaluated)(small))
    with pytest.raises(ValueError, match="does not know"):
        forward_together(nn.Sequential(nn.Dropout()), [small])


def test_frozen_batchnorm_keeps_its_running_statistics_while_the_weights_train(
    phantom_records: list[ImageRecord],
) -> None:
    """freeze_batchnorm_epoch 1 of 2 epochs: the running statistics are those after the first epoch (a one-epoch
    run with the same seed), and the weights moved on in the second; the lesion crops ride along."""
    config = TrainConfig(depth=18, patch_size=32, epochs=1, lr=0.01, lr_decay_epoch=None, device="cpu",
                         patch_context="image", images_per_batch=2, normal_cells=True, lesion_crops=2,
                         lesion_crop_size=64, augment_flips=True, patch_rule=PatchRule(min_tissue=0.0))
    train = cut_patches(phantom_records[:6], rule=config.patch_rule, patch_size=32, progress=False,
                        patch_context="image")
    holdout = cut_patches(phantom_records[6:8], rule=config.patch_rule, patch_size=32, progress=False,
                          patch_context="image")

    def run(c: TrainConfig) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_classifier(depth=18, num_classes=3)
        return fine_tune(model, train, holdout, c, device=torch.device("cpu"), progress=False).model.state_dict()

    one = run(config)
    frozen = run(config.replace(epochs=2, freeze_batchnorm_epoch=1))
    statistics = [k for k in one if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert statistics
    for name in statistics:
        torch.testing.assert_close(frozen[name], one[name], rtol=0, atol=0, msg=name)
    assert not torch.allclose(frozen["fc.weight"], one["fc.weight"])
    assert not torch.allclose(frozen["bn1.weight"], one["bn1.weight"])  # BatchNorm's own weights train on
    with pytest.raises(ValueError, match="freeze_batchnorm_epoch"):
        TrainConfig(freeze_batchnorm_epoch=-1)
