"""The unit embedding: PCA against its closed form, the max-activation matrix, the bundle's embedding.json."""

import math

import numpy as np
import pytest
import torch

from deepminer.bundle import EMBEDDING_FILE, load_bundle
from deepminer.fcn import build_classifier, to_fcn
from deepminer.imaging import IMAGENET_MEAN, IMAGENET_STD
from training.embedding import max_activation_matrix, pca_2d, unit_embedding
from training.ranking import fcn_maps


def test_pca_matches_the_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)) @ np.diag([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + rng.standard_normal(6)
    coords, ratio = pca_2d(x)
    # brute force: eigenvectors of the sample covariance, largest first
    centred = x - x.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / (len(x) - 1))
    order = np.argsort(eigvals)[::-1]
    eigvals, eigvecs = eigvals[order], eigvecs[:, order]
    np.testing.assert_allclose(ratio, eigvals[:2] / eigvals.sum(), rtol=1e-10)
    for i in range(2):
        expected = centred @ eigvecs[:, i]
        sign = np.sign(expected[np.argmax(np.abs(expected))])  # the documented sign convention
        np.testing.assert_allclose(coords[:, i], sign * expected, atol=1e-10)
        assert coords[np.argmax(np.abs(coords[:, i])), i] > 0
    # the projection keeps the variance along each component
    np.testing.assert_allclose(coords.var(axis=0, ddof=1), eigvals[:2], rtol=1e-10)


def test_pca_closed_form_on_a_line_and_degenerate_inputs():
    direction = np.array([3.0, 4.0]) / 5.0
    t = np.array([-1.0, 0.0, 1.0, 3.0])
    coords, ratio = pca_2d(10.0 + t[:, None] * direction[None, :])
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-12)
    # the signed distance from the mean along the line, the largest (3 - 0.75) positive
    np.testing.assert_allclose(coords[:, 0], t - t.mean(), atol=1e-12)
    np.testing.assert_allclose(coords[:, 1], 0.0, atol=1e-12)

    one_image = pca_2d(np.array([[1.0], [3.0], [2.0]]))  # one feature: a single component
    np.testing.assert_allclose(one_image[0], [[-1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(one_image[1], [1.0, 0.0])
    constant = pca_2d(np.ones((4, 3)))
    assert np.all(constant[0] == 0) and np.all(constant[1] == 0)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        pca_2d(np.ones(3))


def test_max_activation_matrix_is_the_per_image_unit_max(phantom_records):
    torch.manual_seed(0)
    fcn = to_fcn(build_classifier(depth=18, num_classes=3)).eval()
    args = {"short_side": 96, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "device": torch.device("cpu"), "progress": False}
    records = phantom_records[:3]
    matrix = max_activation_matrix(fcn_maps(fcn, records, **args))
    assert matrix.shape == (3, 512)
    for i, item in enumerate(fcn_maps(fcn, records, **args)):
        for k in (0, 7, 511):
            assert matrix[i, k] == pytest.approx(float(item.features[k].max()))
    embedding = unit_embedding(matrix, [7, 3])
    assert [u["unit_id"] for u in embedding["units"]] == list(range(512))
    assert [u["unit_id"] for u in embedding["units"] if u["ranked"]] == [3, 7]
    with pytest.raises(ValueError, match="no images"):
        max_activation_matrix(iter(()))


def test_bundle_embedding_covers_every_unit(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    embedding = bundle.embedding
    assert embedding is not None and EMBEDDING_FILE in bundle.meta["files"]
    rankings = bundle.rankings
    assert embedding["method"] == f"PCA of per-image max activations over {rankings['num_images']} hold-out images"
    units = embedding["units"]
    assert [u["unit_id"] for u in units] == list(range(bundle.num_units))
    assert all(math.isfinite(u["x"]) and math.isfinite(u["y"]) for u in units)
    ranked = {u["unit_id"] for e in rankings["per_class"].values() for u in e["units"]}
    assert {u["unit_id"] for u in units if u["ranked"]} == ranked
    first, second = embedding["explained_variance_ratio"]
    assert 0 <= second <= first <= 1 and first + second <= 1 + 1e-9
    assert bundle.meta["embedding"]["explained_variance_ratio"] == embedding["explained_variance_ratio"]
