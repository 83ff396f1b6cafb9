"""PNG overlays: a grid map upsampled onto a downscaled copy of the upload, colour-mapped and alpha-blended.

Each map is upsampled with :func:`deepminer.grid.upsample` (the exact cell
centres), normalised over its own ``[min, max]`` to ``n`` in [0, 1], coloured
with the jet colour map and blended over the grayscale image with opacity
``max_alpha · n``: where the map is at its minimum the image shows through
unchanged, where it peaks the colour covers ``max_alpha`` of it.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

from deepminer.grid import GridMapping, upsample
from deepminer.imaging import resize

COLORMAP: Final = "jet"
MAX_ALPHA = 0.6
# MATLAB's jet as (position, RGB) anchors: dark blue, blue, cyan, yellow, red, dark red.
_JET_ANCHORS = np.array(
    [
        (0.0, 0, 0, 143),
        (0.125, 0, 0, 255),
        (0.375, 0, 255, 255),
        (0.625, 255, 255, 0),
        (0.875, 255, 0, 0),
        (1.0, 128, 0, 0),
    ],
    dtype=np.float64,
)
_LEVELS = np.linspace(0.0, 1.0, 256)
_JET = np.stack([np.interp(_LEVELS, _JET_ANCHORS[:, 0], _JET_ANCHORS[:, c]) for c in (1, 2, 3)], axis=1)


def preview_shape(image_shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``image_shape`` scaled so its longer side is at most ``max_side`` (never enlarged)."""
    height, width = image_shape
    factor = min(1.0, max_side / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


@dataclass(frozen=True)
class Canvas:
    """The downscaled grayscale upload the overlays are drawn on."""

    gray: np.ndarray  # (h, w) float32 in [0, 1]
    mapping: GridMapping

    @classmethod
    def for_image(cls, pixels: np.ndarray, mapping: GridMapping, *, max_side: int) -> Canvas:
        shape = preview_shape((int(pixels.shape[0]), int(pixels.shape[1])), max_side)
        return cls(gray=np.clip(resize(pixels, shape), 0.0, 1.0), mapping=mapping)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.gray.shape[0]), int(self.gray.shape[1])

    def overlay(self, grid_map: np.ndarray, *, max_alpha: float = MAX_ALPHA) -> np.ndarray:
        """``grid_map`` blended over the canvas as ``(h, w, 3)`` uint8 RGB (module docstring)."""
        dense = upsample(grid_map, self.mapping, out_shape=self.shape).astype(np.float64)
        lo, hi = float(dense.min()), float(dense.max())
        level = (dense - lo) / (hi - lo) if hi > lo else np.zeros_like(dense)
        colour = _JET[np.clip(np.rint(level * 255), 0, 255).astype(np.int64)]
        alpha = (max_alpha * level)[..., None]
        gray = (self.gray.astype(np.float64) * 255.0)[..., None]
        return np.clip(np.rint((1.0 - alpha) * gray + alpha * colour), 0, 255).astype(np.uint8)

    def overlay_png(self, grid_map: np.ndarray) -> str:
        """:meth:`overlay` as a base64 PNG."""
        buf = io.BytesIO()
        Image.fromarray(self.overlay(grid_map)).save(buf, format="PNG", compress_level=6)
        return base64.b64encode(buf.getvalue()).decode("ascii")
