"""The outline of the high-CAM region: where the CAM, normalised over its own range, reaches a level.

The CAM is upsampled with :func:`deepminer.grid.upsample` onto a copy of the
image whose longer side is at most ``max_side`` (the outline needs no finer
grid: the CAM itself has one value per 32 network pixels), normalised as the
overlays are, ``n = (CAM - min) / (max - min)``, and traced at ``n = level``
by marching squares (contourpy). The map is padded with a border below the
level first, so every outline is a closed polygon, even where the region
touches the image edge.
"""

from __future__ import annotations

import contourpy
import numpy as np

from deepminer.grid import GridMapping, upsample
from service.overlays import preview_shape

HIGH_CAM_LEVEL = 0.5
"""Share of the CAM's range, above its minimum, that the outlined region reaches: where the overlay turns from
cyan to yellow."""
OUTLINE_MAX_SIDE = 512


def high_cam_outlines(
    cam: np.ndarray, mapping: GridMapping, *, level: float = HIGH_CAM_LEVEL, max_side: int = OUTLINE_MAX_SIDE
) -> list[np.ndarray]:
    """Closed polygons ``(n, 2)`` of (row, column) image pixel coordinates (pixel centres at whole numbers).

    Each polygon's first and last points are equal. Empty when the CAM is flat.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    height, width = mapping.image_shape
    out_h, out_w = preview_shape((height, width), max_side)
    dense = upsample(cam, mapping, out_shape=(out_h, out_w)).astype(np.float64)
    lo, hi = float(dense.min()), float(dense.max())
    if not hi > lo:
        return []
    normalised = np.pad((dense - lo) / (hi - lo), 1, constant_values=-1.0)
    lines = contourpy.contour_generator(z=normalised, line_type=contourpy.LineType.Separate).lines(level)
    outlines = []
    for line in lines:
        xy = np.asarray(line, dtype=np.float64)
        # contourpy gives (x, y) on the padded grid; back to (row, column) on the downscaled copy, kept within
        # its outer pixel edges, then to the image's pixel coordinates (as deepminer.grid.upsample samples).
        rows = np.clip(xy[:, 1] - 1.0, -0.5, out_h - 0.5)
        cols = np.clip(xy[:, 0] - 1.0, -0.5, out_w - 0.5)
        points = np.stack([(rows + 0.5) * height / out_h - 0.5, (cols + 0.5) * width / out_w - 0.5], axis=1)
        if len(points) >= 3:
            if not np.array_equal(points[0], points[-1]):
                points = np.vstack([points, points[:1]])
            outlines.append(points)
    return outlines
