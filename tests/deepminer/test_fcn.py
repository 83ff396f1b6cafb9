"""FCN conversion: the mean of the logit map is the classifier's logits; grid shapes and mapping."""

import numpy as np
import pytest
import torch

from deepminer.fcn import build_classifier, num_units, select_device, to_fcn
from deepminer.formulas import class_activation_map
from deepminer.grid import GridMapping, feature_grid_shape, resized_shape, upsample


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    model = build_classifier(depth=18, num_classes=3).eval()
    # Non-trivial BatchNorm statistics, so eval mode differs from identity.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("shape", [(64, 64), (96, 160), (100, 75)])
def test_fcn_mean_logits_equal_classifier_logits(classifier, shape):
    fcn = to_fcn(classifier).eval()
    x = torch.randn(2, 3, *shape)
    with torch.inference_mode():
        logits_map, features = fcn(x)
        expected = classifier(x)
    assert features.shape[1] == num_units(classifier) == 512
    torch.testing.assert_close(logits_map.mean(dim=(2, 3)), expected, rtol=1e-4, atol=1e-4)


def test_cam_is_logit_map_minus_bias(classifier):
    fcn = to_fcn(classifier).eval()
    with torch.inference_mode():
        logits_map, features = fcn(torch.randn(1, 3, 128, 96))
    weight = fcn.head.weight.detach()[:, :, 0, 0].numpy()
    bias = fcn.head.bias.detach().numpy()
    for c in range(3):
        cam = class_activation_map(features[0].numpy(), weight, c)
        np.testing.assert_allclose(cam + bias[c], logits_map[0, c].numpy(), rtol=1e-4, atol=1e-4)


def test_fcn_shares_weights_with_classifier(classifier):
    fcn = to_fcn(classifier)
    assert fcn.body[0] is classifier.conv1
    assert fcn.body[-1] is classifier.layer4


@pytest.mark.parametrize("size", [31, 32, 33, 64, 100, 227, 908])
def test_feature_grid_shape_matches_network(classifier, size):
    fcn = to_fcn(classifier).eval()
    with torch.inference_mode():
        _, features = fcn(torch.zeros(1, 3, size, size + 13))
    assert tuple(features.shape[2:]) == feature_grid_shape(size, size + 13)


def test_receptive_field_centre_is_32i():
    # With constant weights, a unit's input gradient is symmetric about its
    # receptive-field centre. Random inputs make max-pooling pick every window
    # position equally often (a constant input would always pick the first).
    torch.manual_seed(0)
    model = build_classifier(depth=18, num_classes=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    fcn = to_fcn(model).eval()
    x = torch.rand(8, 3, 448, 448, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    _, features = fcn(x)
    features[:, 0, 7, 5].sum().backward()
    g = x.grad.abs().sum((0, 1)).numpy()
    ys, xs = np.mgrid[: g.shape[0], : g.shape[1]]
    centroid = ((g * ys).sum() / g.sum(), (g * xs).sum() / g.sum())
    mapping = GridMapping.for_input(image_shape=(448, 448), input_shape=(448, 448))
    assert mapping.centre(7, 5) == (224.0, 160.0)
    assert centroid == pytest.approx((224.0, 160.0), abs=1.0)


def test_mapping_with_resize():
    # Upload 1000x800 resized to 320x256: r = 0.32; cell centre 32i lands at (32i + 0.5)/0.32 - 0.5.
    assert resized_shape(1000, 800, 256) == (320, 256)
    m = GridMapping.for_input(image_shape=(1000, 800), input_shape=(320, 256))
    assert m.grid_shape == (10, 8)
    y, x = m.centre(3, 2)
    assert y == pytest.approx((96 + 0.5) / 0.32 - 0.5)
    assert x == pytest.approx((64 + 0.5) / 0.32 - 0.5)
    assert m.to_cell(y, x) == pytest.approx((3, 2))


def test_upsample_hits_grid_values_at_cell_centres():
    m = GridMapping.for_input(image_shape=(640, 480), input_shape=(320, 240))
    grid = np.random.default_rng(0).random(m.grid_shape).astype(np.float32)
    up = upsample(grid, m)
    assert up.shape == (640, 480)
    for i, j in [(0, 0), (3, 4), (9, 7)]:
        y, x = m.centre(i, j)
        assert float(up[int(y + 0.5), int(x + 0.5)]) == pytest.approx(float(grid[i, j]), abs=0.05)
        # Exactly on the centre when it is a whole pixel (offset 0.5 here, so check half-way interpolation).
    assert up.min() >= grid.min() - 1e-6 and up.max() <= grid.max() + 1e-6
    small = upsample(grid, m, (64, 48))
    assert small.shape == (64, 48)


@pytest.mark.parametrize(
    ("height", "width", "short_side", "expected"),
    [
        (300, 502, 227, (227, 380)),  # 502 * 227 / 300 = 379.85: to the nearest, not down
        (502, 300, 227, (380, 227)),
        (300, 500, 227, (227, 378)),  # 378.33: to the nearest, not up
        (3328, 2560, 908, (1180, 908)),  # a full-field mammogram at the reference scale: 1180.4
        (1000, 800, 256, (320, 256)),  # exact
        (512, 512, 128, (128, 128)),
    ],
)
def test_resized_shape_rounds_the_long_side_to_the_nearest_pixel(height, width, short_side, expected):
    assert resized_shape(height, width, short_side) == expected


def test_upsample_places_an_analytic_ramp_exactly_at_a_reduced_output_size():
    """A map linear in the cell coordinates is reproduced exactly by bilinear interpolation, so every output
    pixel can be checked against the geometry worked out by hand (module docstring of deepminer.grid).

    Upload 1000 x 800, network input 320 x 256 (r = 0.32), grid 10 x 8, output 100 x 80 (a tenth per axis).
    Output pixel p covers upload row ``(p + 0.5) * 10 - 0.5``; cell i is centred on upload row
    ``(32 i + 0.5) / 0.32 - 0.5``. Solving for i: ``i = ((p + 0.5) * 320 / 100 - 0.5) / 32``, and the same
    with 256 / 80 across. Beyond the outermost centres the edge cell's value is held.
    """
    mapping = GridMapping.for_input(image_shape=(1000, 800), input_shape=(320, 256))
    rows, cols = np.mgrid[0:10, 0:8]
    ramp = (1.0 * rows + 0.5 * cols + 3.0).astype(np.float32)  # different slopes catch swapped axes
    up = upsample(ramp, mapping, (100, 80))
    i = np.clip(((np.arange(100) + 0.5) * 320 / 100 - 0.5) / 32, 0, 9)
    j = np.clip(((np.arange(80) + 0.5) * 256 / 80 - 0.5) / 32, 0, 7)
    expected = 1.0 * i[:, None] + 0.5 * j[None, :] + 3.0
    np.testing.assert_allclose(up, expected, rtol=0, atol=2e-5)
    # Spot checks in numbers: output row 50 is cell (50.5 * 3.2 - 0.5) / 32 = 5.034375, column 40 is 4.034375.
    assert float(up[50, 40]) == pytest.approx(5.034375 + 0.5 * 4.034375 + 3.0, abs=2e-5)
    assert float(up[0, 0]) == pytest.approx(3.0 + 1.1 / 32 + 0.5 * 1.1 / 32, abs=2e-5)


def test_select_device_cpu_and_errors():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            select_device("cuda")


def test_build_classifier_loads_local_imagenet_weights(tmp_path):
    source = build_classifier(depth=18, num_classes=1000)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(source.state_dict(), path)
    model = build_classifier(depth=18, num_classes=3, imagenet_weights=path)
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 3
    with pytest.raises(ValueError, match="does not hold ResNet-34"):
        build_classifier(depth=34, num_classes=3, imagenet_weights=path)
    with pytest.raises(FileNotFoundError):
        build_classifier(depth=18, imagenet_weights=tmp_path / "missing.pth")
