"""The unit embedding (Lu & Perer, DESIGN.md §4), written into the bundle as ``embedding.json``.

Each unit is described by its largest activation on each hold-out mammogram, a
vector with one entry per image; PCA places all K units in 2-D, so units that
respond to the same images lie close together. Only the ``(images, K)`` matrix
of maxima is kept, never an image's features.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from deepminer.formulas import unit_max_activations
from training.ranking import ImageMaps


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project the rows of ``x`` ``(n, d)`` onto their first two principal components (scikit-learn's PCA).

    With the column means removed, ``X_c = X - 1 μᵀ`` and its SVD ``X_c = U Σ Vᵀ``
    (singular values σ_1 ≥ σ_2 ≥ …), the coordinates are
    ``X_c V_{:,1:2} = U_{:,1:2} Σ_{1:2}`` and the explained variance ratios
    ``σ_i² / Σ_j σ_j²``. The sign of each component is fixed so that its
    largest-magnitude coordinate is positive. Where fewer than two components
    exist (n or d below 2) or the data have no variance, the missing
    coordinates and ratios are 0.

    Returns ``(coords (n, 2), explained_variance_ratio (2,))``, float64.
    """
    if x.ndim != 2:
        raise ValueError(f"x must be (n, d), got shape {x.shape}")
    data = x.astype(np.float64)
    coords = np.zeros((data.shape[0], 2))
    ratio = np.zeros(2)
    m = min(2, *data.shape)
    # scikit-learn divides by the total variance and by n - 1: degenerate inputs keep their zeros.
    if data.shape[0] < 2 or not np.any(data != data[0]):
        return coords, ratio
    pca = PCA(n_components=m, svd_solver="full")
    coords[:, :m] = pca.fit_transform(data)
    ratio[:m] = pca.explained_variance_ratio_
    # Its sign convention differs between releases; this one is documented above and tested.
    for i in range(m):
        if coords[int(np.argmax(np.abs(coords[:, i]))), i] < 0:
            coords[:, i] = -coords[:, i]
    return coords, ratio


class UnitMaxima:
    """The rows of :func:`max_activation_matrix`, gathered from a stream of maps that another pass consumes
    (:meth:`watch`), so the embedding needs no FCN pass of its own."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def watch(self, maps: Iterable[ImageMaps]) -> Iterator[ImageMaps]:
        """Pass ``maps`` through unchanged, keeping each image's per-unit maxima."""
        for item in maps:
            self.rows.append(unit_max_activations(item.features).astype(np.float32))
            yield item

    def matrix(self) -> np.ndarray:
        """``(images, K)``, in the order the images went by."""
        if not self.rows:
            raise ValueError("no images to embed units with")
        return np.stack(self.rows)


def max_activation_matrix(maps: Iterable[ImageMaps]) -> np.ndarray:
    """``M[i, k] = max_xy A_k(x, y)`` on image i, shape ``(images, K)``; each image's features are dropped after use."""
    maxima = UnitMaxima()
    for _ in maxima.watch(maps):
        pass
    return maxima.matrix()


def unit_embedding(max_activations: np.ndarray, ranked: Iterable[int], *, source: str = "hold-out") -> dict[str, Any]:
    """``embedding.json``: every unit's 2-D PCA position, marking the ranked units."""
    num_images, num_units = max_activations.shape
    coords, ratio = pca_2d(max_activations.T)
    ranked_set = {int(k) for k in ranked}
    return {
        "method": f"PCA of per-image max activations over {num_images} {source} images",
        "num_images": int(num_images),
        "explained_variance_ratio": [float(v) for v in ratio],
        "units": [
            {"unit_id": k, "x": float(coords[k, 0]), "y": float(coords[k, 1]), "ranked": k in ranked_set}
            for k in range(num_units)
        ],
    }
