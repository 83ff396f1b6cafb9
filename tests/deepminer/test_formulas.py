"""The paper's formulas against brute-force versions."""

import itertools
import math

import numpy as np
import pytest

from deepminer import formulas as F


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_cam_matches_brute_force(rng):
    features = rng.random((6, 4, 5)).astype(np.float32)
    weights = rng.standard_normal((3, 6)).astype(np.float32)
    for c in range(3):
        expected = np.zeros((4, 5))
        for y, x in itertools.product(range(4), range(5)):
            expected[y, x] = sum(weights[c, k] * features[k, y, x] for k in range(6))
        np.testing.assert_allclose(F.class_activation_map(features, weights, c), expected, rtol=1e-5)


def test_cam_rejects_bad_class_and_shapes(rng):
    with pytest.raises(ValueError, match="class_index"):
        F.class_activation_map(rng.random((2, 3, 3)), rng.random((3, 2)), 3)
    with pytest.raises(ValueError, match=r"\(C, K\)"):
        F.class_activation_map(rng.random((2, 3, 3)), rng.random((3, 4)), 0)


def test_influence_matches_brute_force(rng):
    features = rng.random((5, 3, 4))
    weights = rng.standard_normal((3, 5))
    got = F.influence(features, weights)
    for c, k in itertools.product(range(3), range(5)):
        assert got[c, k] == pytest.approx(max(features[k, y, x] for y in range(3) for x in range(4)) * weights[c, k])


def test_top_units_orders_by_score_and_breaks_ties_by_id():
    scores = np.array([0.5, 2.0, 0.5, 3.0, -1.0])
    assert F.top_units(scores, 3).tolist() == [3, 1, 0]
    assert F.top_units(scores, 10).tolist() == [3, 1, 0, 2, 4]
    with pytest.raises(ValueError, match="k must be"):
        F.top_units(scores, 0)


def test_most_frequent_units_ties_and_zero_counts():
    counts = np.array([3, 0, 5, 3, 1])
    infl = np.array([1.0, 9.0, 0.1, 2.0, 0.5])
    assert F.most_frequent_units(counts, infl, 10).tolist() == [2, 3, 0, 4]
    assert F.most_frequent_units(counts, infl, 2).tolist() == [2, 3]


def test_coverage_arithmetic():
    # 4 images x top-2 = 8 slots; the selected units 0 and 2 fill 3 + 2 of them.
    counts = np.array([3, 1, 2, 2])
    assert F.coverage(counts, np.array([0, 2]), 8) == pytest.approx(5 / 8)
    with pytest.raises(ValueError):
        F.coverage(counts, np.array([0]), 0)


def test_iou_and_binarise(rng):
    a = rng.random((20, 30)) > 0.6
    b = rng.random((20, 30)) > 0.5
    inter = sum(1 for y in range(20) for x in range(30) if a[y, x] and b[y, x])
    union = sum(1 for y in range(20) for x in range(30) if a[y, x] or b[y, x])
    assert F.iou(a, b) == pytest.approx(inter / union)
    assert F.iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 0.0
    assert F.binarise(np.array([0.1, 0.5, 0.9]), 0.5).tolist() == [False, False, True]


def test_softmax_sums_to_one(rng):
    z = rng.standard_normal((3, 4, 5)) * 50
    p = F.softmax(z, axis=0)
    np.testing.assert_allclose(p.sum(axis=0), 1.0)
    assert np.isfinite(p).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_exact_where_exp_overflows(dtype):
    """exp(1000) overflows even float64 (largest ~ exp(709)) and exp(-1000) underflows to 0: only the shift by the
    maximum gives numbers, and they are those of the logits [2, 1, 0] (softmax ignores a common offset)."""
    z = np.array([[1000.0, -1000.0], [999.0, -1001.0], [998.0, -1002.0]], dtype=dtype)
    p = F.softmax(z, axis=0)
    e = np.exp([2.0, 1.0, 0.0])
    expected = e / e.sum()  # 0.6652, 0.2447, 0.0900
    np.testing.assert_allclose(p[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(p[:, 1], expected, rtol=1e-6)


@pytest.mark.parametrize("chunks", [1, 3, 10])
def test_top_quantile_streamed_equals_whole_data(rng, chunks):
    data = rng.gamma(2.0, size=(4, 10, 100)).astype(np.float32)  # 10 "images" of 100 activations
    q = F.TopQuantile(4, total=1000, q=0.99)
    for part in np.array_split(data, chunks, axis=1):
        for image in np.moveaxis(part, 1, 0):
            q.update(image.reshape(4, 10, 10))
    keep = math.ceil(0.01 * 1000)
    expected = np.sort(data.reshape(4, -1), axis=1)[:, -keep]
    np.testing.assert_array_equal(q.thresholds(), expected)
    # At most 1% of activations exceed the threshold.
    assert ((data.reshape(4, -1) > q.thresholds()[:, None]).sum(axis=1) <= keep).all()


def test_top_quantile_checks_totals(rng):
    q = F.TopQuantile(2, total=8)
    q.update(rng.random((2, 2, 2)))
    with pytest.raises(ValueError, match="expected 8"):
        q.thresholds()
    with pytest.raises(ValueError, match="more activations"):
        q.update(rng.random((2, 3, 3)))
