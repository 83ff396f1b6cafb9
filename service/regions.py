"""The region a user marks on an image (Lu & Perer, DESIGN.md §4), read from a request and rasterised.

A region is a polygon in the upload's pixels or a mask PNG of the upload's size.
Both are rasterised at the *query resolution*: the network input, downscaled so
that its longer side is at most :data:`QUERY_MAX_SIDE` (one layer4 cell then
still spans several pixels). :func:`contributing_cells` finds the grid cells
whose values bilinear upsampling draws on for a region's pixels, which lets the
region query (:mod:`service.methods.region_query`) prune units exactly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image

from deepminer import imaging
from deepminer.grid import GridMapping
from service.errors import CorruptImageError, ImageTooLargeError, InvalidParameterError, UnsupportedMediaTypeError

QUERY_MAX_SIDE: Final = 384
"""Longest side, in pixels, of the grid on which unit masks and the region are compared."""
MAX_POLYGON_VERTICES: Final = 4096
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
POLYGON_FIELD: Final = "polygon"
MASK_FIELD: Final = "mask"


@dataclass(frozen=True)
class PolygonRegion:
    """A closed polygon, vertices ``(x, y)`` = (column, row) in the uploaded image's pixels (centres at integers)."""

    vertices: np.ndarray  # (n, 2) float64


@dataclass(frozen=True)
class MaskRegion:
    """A PNG of the uploaded image's size; pixels at half intensity or more are inside the region."""

    png: bytes


Region = PolygonRegion | MaskRegion


def parse_polygon(text: str) -> PolygonRegion:
    """``[[x, y], …]`` (JSON) as a polygon; :class:`InvalidParameterError` naming ``polygon`` says what is wrong."""

    def bad(why: str) -> InvalidParameterError:
        return InvalidParameterError(
            f"polygon must be a JSON list of at least 3 [x, y] points (x = column, y = row, in image pixels); {why}",
            field=POLYGON_FIELD,
        )

    try:
        points = json.loads(text)
    except (ValueError, RecursionError):
        raise bad(f"got {text[:60]!r}, which is not JSON") from None
    if not isinstance(points, list) or not 3 <= len(points) <= MAX_POLYGON_VERTICES:
        size = f"{len(points)} points" if isinstance(points, list) else type(points).__name__
        raise bad(f"got {size} (at most {MAX_POLYGON_VERTICES})")
    for i, point in enumerate(points):
        if not (
            isinstance(point, list)
            and len(point) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point)
        ):
            raise bad(f"point {i} is {json.dumps(point)[:40]}")
    return PolygonRegion(vertices=np.asarray(points, dtype=np.float64))


def region_from_form(*, polygon: str | None, mask: bytes | None) -> Region:
    """The region a request gives: exactly one of a ``polygon`` (JSON text) and a ``mask`` (PNG bytes)."""
    if (polygon is None) == (mask is None):
        raise InvalidParameterError(
            "give the region as exactly one of the form fields `polygon` (JSON [[x, y], …]) and `mask` (a PNG)",
            field=POLYGON_FIELD,
        )
    if polygon is not None:
        return parse_polygon(polygon)
    assert mask is not None
    if not mask.startswith(PNG_SIGNATURE):
        raise UnsupportedMediaTypeError(f"mask must be a PNG; it starts with {mask[:8]!r}", field=MASK_FIELD)
    return MaskRegion(png=mask)


def query_shape(input_shape: tuple[int, int], max_side: int = QUERY_MAX_SIDE) -> tuple[int, int]:
    """The network input's shape, scaled down (aspect kept) so that its longer side is at most ``max_side``."""
    height, width = input_shape
    factor = min(1.0, max_side / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def _pixel_centres(image_shape: tuple[int, int], out_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Upload coordinates (rows, columns) of the query pixels' centres, as :func:`deepminer.grid.upsample` samples."""
    rows = (np.arange(out_shape[0]) + 0.5) * image_shape[0] / out_shape[0] - 0.5
    cols = (np.arange(out_shape[1]) + 0.5) * image_shape[1] / out_shape[1] - 0.5
    return rows, cols


def rasterise_polygon(vertices: np.ndarray, image_shape: tuple[int, int], out_shape: tuple[int, int]) -> np.ndarray:
    """Query pixels whose centre lies inside the polygon (even-odd rule), shape ``out_shape``."""
    rows, cols = _pixel_centres(image_shape, out_shape)
    inside = np.zeros(out_shape, dtype=bool)
    xs, ys = vertices[:, 0], vertices[:, 1]
    for (x1, y1), (x2, y2) in zip(zip(xs, ys), zip(np.roll(xs, -1), np.roll(ys, -1))):
        if y1 == y2:
            continue
        # Rows whose centre y the edge crosses: min(y1, y2) <= y < max(y1, y2), so a shared vertex counts once.
        lo, hi = np.searchsorted(rows, min(y1, y2), side="left"), np.searchsorted(rows, max(y1, y2), side="left")
        if lo >= hi:
            continue
        crossing = x1 + (rows[lo:hi] - y1) * (x2 - x1) / (y2 - y1)
        inside[lo:hi] ^= cols[None, :] < crossing[:, None]
    return inside


def rasterise_mask(
    png: bytes, image_shape: tuple[int, int], out_shape: tuple[int, int], *, max_pixels: int
) -> np.ndarray:
    """A mask PNG of the image's size at the query resolution: a query pixel is inside when half its area is."""
    try:
        decoded = imaging.decode_raster(png, max_pixels=max_pixels)  # region_from_form checked the PNG signature
    except imaging.ImageTooLargeError as exc:
        raise ImageTooLargeError(str(exc), field=MASK_FIELD) from None
    except imaging.ImageDecodeError as exc:
        raise CorruptImageError(f"mask: {exc}", field=MASK_FIELD) from None
    if decoded.pixels.shape != image_shape:
        raise InvalidParameterError(
            f"mask must have the image's shape {image_shape} (rows, columns); got {decoded.pixels.shape}",
            field=MASK_FIELD,
        )
    inside = (decoded.pixels >= 0.5).astype(np.float32)
    # A box filter averages exactly the upload pixels each query pixel covers.
    area = Image.fromarray(inside, mode="F").resize((out_shape[1], out_shape[0]), Image.Resampling.BOX)
    return np.asarray(area, dtype=np.float32) >= 0.5


def contributing_cells(mapping: GridMapping, region: np.ndarray) -> np.ndarray:
    """Grid cells that bilinear upsampling (:func:`deepminer.grid.upsample`) draws on for the region's pixels.

    Pixels outside the outermost cell centres hold the edge values, as upsample does.
    """
    rows, cols = _pixel_centres(mapping.image_shape, region.shape)
    # to_cell is affine, so it maps arrays of coordinates as upsample uses it.
    gy, gx = (np.asarray(v) for v in mapping.to_cell(rows, cols))  # type: ignore[arg-type]
    h, w = mapping.grid_shape
    used_rows = np.zeros(h, dtype=bool)
    used_cols = np.zeros(w, dtype=bool)
    cells = np.zeros((h, w), dtype=bool)
    for r in np.flatnonzero(region.any(axis=1)):
        used_rows[:] = False
        used_cols[:] = False
        y = math.floor(float(np.clip(gy[r], 0, h - 1)))
        used_rows[y : min(y + 2, h)] = True
        x = np.clip(gx[region[r]], 0, w - 1)
        lo = np.floor(x).astype(np.int64)
        used_cols[lo] = True
        used_cols[np.minimum(lo + 1, w - 1)] = True
        cells |= used_rows[:, None] & used_cols[None, :]
    return cells
