"""Interactive queries on one mammogram (Lu & Perer, DESIGN.md §4): region query and label reports.

The user marks a region; every unit's activation map, upsampled onto the image
(:func:`deepminer.grid.upsample`) and binarised at the unit's threshold
(:func:`deepminer.formulas.binarise`, the ranking's whole-mammogram quantile),
is compared with it by IoU (:func:`deepminer.formulas.iou`). Units at or above
``min_iou`` are the candidates an expert may label as a group.

Maps and region are compared at the *query resolution*: the network input,
downscaled so that its longer side is at most :data:`QUERY_MAX_SIDE` (one
layer4 cell then still spans several pixels). A unit's mask can meet the region
only where a cell that contributes to the region's pixels exceeds the unit's
threshold, because bilinear upsampling is a convex combination of the nearest
cells; that test runs for all K units at once on the grid, and only the units
that pass it are upsampled. The others have IoU 0 (exactly, up to float rounding).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np
from PIL import Image

from deepminer import imaging
from deepminer.formulas import binarise, iou, unit_max_activations
from deepminer.grid import GridMapping, upsample
from service.errors import (
    CorruptImageError,
    ImageTooLargeError,
    InferenceCancelledError,
    InvalidParameterError,
    UnsupportedMediaTypeError,
)
from service.explainer import Explainer, ModelInfo
from service.units import UnitAnnotation, UnitCatalog

METHOD: Final = "Lu & Perer region query: IoU of each unit's upsampled map, binarised at its threshold, with the region"
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
        decoded = imaging.decode_image(png, max_pixels=max_pixels)
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


@dataclass(frozen=True)
class UnitMatch:
    """A unit whose binarised map overlaps the region by ``iou`` (at least ``min_iou``)."""

    unit_id: int
    iou: float
    max_activation: float
    threshold: float
    mask_fraction: float  # share of the image inside the unit's binarised map
    annotations: tuple[UnitAnnotation, ...]


@dataclass(frozen=True)
class LabelReport:
    """One label on this image: the units that carry it (under the loaded bundle), their mean max activation and IoU."""

    label: str
    unit_ids: tuple[int, ...]
    mean_max_activation: float
    mean_iou: float


@dataclass(frozen=True)
class RegionQueryResult:
    """What a region query found on one image."""

    method: str
    model: ModelInfo
    image_shape: tuple[int, int]
    image_format: str
    image_bits: int
    input_shape: tuple[int, int]
    query_shape: tuple[int, int]
    region_pixels: int
    region_fraction: float
    min_iou: float
    units: tuple[UnitMatch, ...]
    labels: tuple[LabelReport, ...]
    timings_ms: Mapping[str, float]


class RegionQueries:
    """Region queries and label reports with the loaded model; decoding and inference are the explainer's.

    Thread-safe; :meth:`query` blocks, so call it from a worker thread.
    """

    def __init__(self, *, explainer: Explainer, catalog: UnitCatalog, max_side: int = QUERY_MAX_SIDE) -> None:
        self.explainer = explainer
        self.catalog = catalog
        self.max_side = max_side

    def query(
        self,
        data: bytes,
        region: Region,
        *,
        min_iou: float = 0.2,
        cancel: threading.Event | None = None,
    ) -> RegionQueryResult:
        """Rank the units of the image in ``data`` by IoU with ``region``; report per label on this image."""
        if not 0.0 < min_iou <= 1.0:
            raise InvalidParameterError(f"min_iou must be in (0, 1]; got {min_iou}", field="min_iou")
        laps: dict[str, float] = {}
        last = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal last
            now = time.perf_counter()
            laps[stage] = (now - last) * 1000.0
            last = now
            if cancel is not None and cancel.is_set():
                raise InferenceCancelledError(f"region query abandoned after the {stage} stage")

        image = self.explainer.decode(data)
        lap("decode")
        x = self.explainer.preprocess(image.pixels)
        lap("preprocess")
        # The auxiliary term is the same at every location, so it changes no unit map;
        # the training means stand in for a bundle that takes auxiliary features.
        _, features = self.explainer.forward(x, self.explainer.reference_aux)
        lap("inference")

        image_shape = (int(image.pixels.shape[0]), int(image.pixels.shape[1]))
        input_shape = (int(x.shape[2]), int(x.shape[3]))
        shape = query_shape(input_shape, self.max_side)
        if isinstance(region, PolygonRegion):
            mask = rasterise_polygon(region.vertices, image_shape, shape)
            field = POLYGON_FIELD
        else:
            mask = rasterise_mask(region.png, image_shape, shape, max_pixels=self.explainer.max_image_pixels)
            field = MASK_FIELD
        region_pixels = int(mask.sum())
        if region_pixels == 0:
            raise InvalidParameterError(
                f"the region covers no pixel of the image at the query resolution {shape} (rows, columns)", field=field
            )
        lap("region")

        mapping = GridMapping.for_input(image_shape=image_shape, input_shape=input_shape)
        thresholds = self.catalog.thresholds
        maxima = unit_max_activations(features)
        cells = contributing_cells(mapping, mask)
        # Exact pruning: no contributing cell above the threshold means an empty intersection.
        candidates = np.flatnonzero((features[:, cells] > thresholds[:, None]).any(axis=1))
        ious = np.zeros(features.shape[0])
        fractions: dict[int, float] = {}
        for k in candidates:
            unit_mask = binarise(upsample(features[k], mapping, shape), float(thresholds[k]))
            ious[k] = iou(unit_mask, mask)
            fractions[int(k)] = float(unit_mask.mean())
        lap("query")

        matched = sorted((int(k) for k in np.flatnonzero(ious >= min_iou)), key=lambda k: (-ious[k], k))
        annotations = self.catalog.annotations_for(matched, naming_only=True) if matched else {}
        labelled = self.catalog.current_labels()
        lap("annotations")

        units = tuple(
            UnitMatch(
                unit_id=k,
                iou=float(ious[k]),
                max_activation=float(maxima[k]),
                threshold=float(thresholds[k]),
                mask_fraction=fractions[k],
                annotations=annotations[k],
            )
            for k in matched
        )
        return RegionQueryResult(
            method=METHOD,
            model=self.explainer.model,
            image_shape=image_shape,
            image_format=image.format,
            image_bits=image.bits,
            input_shape=input_shape,
            query_shape=shape,
            region_pixels=region_pixels,
            region_fraction=region_pixels / float(shape[0] * shape[1]),
            min_iou=min_iou,
            units=units,
            labels=label_reports(labelled, maxima=maxima, ious=ious),
            timings_ms=MappingProxyType({**laps, "total": sum(laps.values())}),
        )


def label_reports(
    labelled: Mapping[int, tuple[UnitAnnotation, ...]], *, maxima: np.ndarray, ious: np.ndarray
) -> tuple[LabelReport, ...]:
    """Per label: the units carrying it, their mean max activation and mean IoU; highest mean IoU first.

    A unit counts once per label however many annotators gave it that label.
    """
    units_of: dict[str, set[int]] = {}
    for unit_id, records in labelled.items():
        for record in records:
            units_of.setdefault(record.label, set()).add(unit_id)
    reports = [
        LabelReport(
            label=label,
            unit_ids=tuple(sorted(ids)),
            mean_max_activation=float(np.mean([maxima[k] for k in ids])),
            mean_iou=float(np.mean([ious[k] for k in ids])),
        )
        for label, ids in units_of.items()
    ]
    return tuple(sorted(reports, key=lambda r: (-r.mean_iou, -r.mean_max_activation, r.label)))
