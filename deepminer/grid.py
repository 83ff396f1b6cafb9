"""How a layer4 grid cell maps onto the pixels of the image the caller uploaded.

A torchvision ResNet halves the resolution five times (conv1, maxpool and the
first block of layer2–4), each time with ``n → ceil(n / 2)``, and every one of
those stages centres output i on input pixel 2i. So layer4 cell (i, j) is
centred on pixel (32 i, 32 j) of the network input. The input is the upload
resized by a factor r per axis; pixel p of the input covers upload pixels
around ``(p + 0.5) / r - 0.5``. Together: the centre of cell (i, j) lies at
``offset + scale · (i, j)`` in upload pixel coordinates (row, column; pixel
centres at integers), with ``scale = 32 / r`` and ``offset = 0.5 / r - 0.5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NETWORK_STRIDE = 32
"""Total stride of a ResNet's layer4 with respect to its input."""


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Shape of an image after scaling its short side to ``short_side`` (aspect kept, rounded)."""
    if height < 1 or width < 1:
        raise ValueError(f"image shape must be positive, got {(height, width)}")
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


def patch_cells(patch_size: int) -> int:
    """The classifier's patch side in layer4 cells: ``patch_size // 32``, at least 1 (3 for the demo's 112 px)."""
    if patch_size < 1:
        raise ValueError(f"patch_size must be at least 1 px, got {patch_size}")
    return max(1, patch_size // NETWORK_STRIDE)


def feature_grid_shape(input_height: int, input_width: int) -> tuple[int, int]:
    """Shape of the layer4 grid for a network input of the given size: ``ceil(n / 32)`` per axis."""
    return math.ceil(input_height / NETWORK_STRIDE), math.ceil(input_width / NETWORK_STRIDE)


@dataclass(frozen=True)
class GridMapping:
    """Affine map from grid cell (i, j) to upload pixel coordinates (row, column).

    ``centre(i, j) = offset + scale · (i, j)``; one cell spans ``scale`` pixels
    per axis.
    """

    grid_shape: tuple[int, int]
    image_shape: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]

    @classmethod
    def for_input(cls, *, image_shape: tuple[int, int], input_shape: tuple[int, int]) -> GridMapping:
        """Mapping for an upload of ``image_shape`` resized to the network input ``input_shape``."""
        ry = input_shape[0] / image_shape[0]
        rx = input_shape[1] / image_shape[1]
        return cls(
            grid_shape=feature_grid_shape(*input_shape),
            image_shape=(int(image_shape[0]), int(image_shape[1])),
            scale=(NETWORK_STRIDE / ry, NETWORK_STRIDE / rx),
            offset=(0.5 / ry - 0.5, 0.5 / rx - 0.5),
        )

    def centre(self, i: float, j: float) -> tuple[float, float]:
        """Upload pixel (row, column) at the centre of cell (i, j)."""
        return self.offset[0] + self.scale[0] * i, self.offset[1] + self.scale[1] * j

    def to_cell(self, y: float, x: float) -> tuple[float, float]:
        """Fractional grid coordinates of upload pixel (y, x): the inverse of :meth:`centre`."""
        return (y - self.offset[0]) / self.scale[0], (x - self.offset[1]) / self.scale[1]


def _interp_matrix(n_out: int, positions: np.ndarray, n_in: int) -> np.ndarray:
    """Rows of linear-interpolation weights sampling a length-``n_in`` signal at ``positions``."""
    pos = np.clip(positions, 0.0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def upsample(grid_map: np.ndarray, mapping: GridMapping, out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Bilinear upsampling of an ``(h, w)`` grid map onto the upload, using the exact cell centres.

    ``out_shape`` defaults to the upload's shape; a smaller one samples a
    uniformly downscaled copy of the upload (output pixel p covers upload pixels
    around ``(p + 0.5) · H / H_out - 0.5``). Beyond the outermost cell centres the
    edge values are held.
    """
    if grid_map.shape != mapping.grid_shape:
        raise ValueError(f"map shape {grid_map.shape} does not match the grid {mapping.grid_shape}")
    height, width = out_shape or mapping.image_shape
    ys = (np.arange(height) + 0.5) * mapping.image_shape[0] / height - 0.5
    xs = (np.arange(width) + 0.5) * mapping.image_shape[1] / width - 0.5
    gy, gx = mapping.to_cell(ys, xs)
    ry = _interp_matrix(height, gy, grid_map.shape[0])
    rx = _interp_matrix(width, gx, grid_map.shape[1])
    return ry @ grid_map.astype(np.float32, copy=False) @ rx.T
