"""Lu & Perer's region query (DESIGN.md §4): which units' binarised maps match a region the user marks.

Every unit's activation map, upsampled onto the region's grid
(:func:`deepminer.grid.upsample`) and binarised at the unit's threshold
(:func:`deepminer.formulas.binarise`, the ranking's whole-mammogram quantile),
is compared with the region by IoU (:func:`deepminer.formulas.iou`). Units at
or above ``min_iou`` are the candidates an expert may label as a group; the
label reports give, per label on this image, its units' mean max activation
and mean IoU.

A unit's mask can meet the region only where a cell that contributes to the
region's pixels (:func:`service.regions.contributing_cells`) exceeds the unit's
threshold, because bilinear upsampling is a convex combination of the nearest
cells; that test runs for all K units at once on the grid, and only the units
that pass it are upsampled. The others have IoU 0 (exactly, up to float rounding).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

import numpy as np

from deepminer.formulas import binarise, iou, unit_max_activations
from deepminer.grid import GridMapping, upsample
from service.errors import InvalidParameterError
from service.inference import Inference, Stopwatch
from service.methods.base import MethodContext, MethodResult
from service.regions import (
    MASK_FIELD,
    POLYGON_FIELD,
    QUERY_MAX_SIDE,
    PolygonRegion,
    Region,
    contributing_cells,
    parse_polygon,
    query_shape,
    rasterise_mask,
    rasterise_polygon,
)
from service.units import UnitAnnotation

if TYPE_CHECKING:
    from service.schemas import RegionQueryResponse

METHOD: Final = "Lu & Perer region query: IoU of each unit's upsampled map, binarised at its threshold, with the region"


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
class RegionQueryResult(MethodResult):
    """What a region query found on one image."""

    query_shape: tuple[int, int]
    region_pixels: int
    region_fraction: float
    min_iou: float
    units: tuple[UnitMatch, ...]
    labels: tuple[LabelReport, ...]
    mapping: GridMapping
    best_map: np.ndarray | None  # A_k of the best-matching unit (units[0]) on the layer4 grid; None when none matched


@dataclass(frozen=True)
class RegionParams:
    """A validated request: the region and the smallest IoU a unit must reach to be listed."""

    region: Region
    min_iou: float = 0.2


class RegionQuery:
    """The region query; see the module docstring. ``max_side``: the query resolution's longer side."""

    name: ClassVar[str] = "region_query"
    title: ClassVar[str] = METHOD
    # The auxiliary term is the same at every location, so it changes no unit map;
    # the training means stand in for a bundle that takes auxiliary features.
    takes_aux: ClassVar[bool] = False
    route: ClassVar[str | None] = "/query/region"

    def __init__(self, context: MethodContext, *, max_side: int = QUERY_MAX_SIDE) -> None:
        self.context = context
        self.max_side = max_side

    def params(self, *, region: Region, min_iou: float = 0.2) -> RegionParams:
        """Check a request before any work: ``0 < min_iou <= 1``."""
        if not 0.0 < min_iou <= 1.0:
            raise InvalidParameterError(f"min_iou must be in (0, 1]; got {min_iou}", field="min_iou")
        return RegionParams(region=region, min_iou=min_iou)

    def parse(self, query: Mapping[str, str]) -> RegionParams:
        """A ``polygon`` (JSON ``[[x, y], …]``) and ``min_iou`` from a query string."""
        if POLYGON_FIELD not in query:
            raise InvalidParameterError("give the region as `polygon` (JSON [[x, y], …])", field=POLYGON_FIELD)
        try:
            min_iou = float(query.get("min_iou", "0.2"))
        except ValueError:
            raise InvalidParameterError(f"min_iou must be a number; got {query['min_iou']!r}", field="min_iou") from None
        return self.params(region=parse_polygon(query[POLYGON_FIELD]), min_iou=min_iou)

    def run(self, inference: Inference, params: RegionParams, clock: Stopwatch) -> RegionQueryResult:
        """Rank the units of ``inference`` by IoU with the region; report per label on this image.

        Closes the ``region``, ``query`` and ``annotations`` stages.
        """
        image_shape, input_shape = inference.image_shape, inference.input_shape
        shape = query_shape(input_shape, self.max_side)
        region = params.region
        if isinstance(region, PolygonRegion):
            mask = rasterise_polygon(region.vertices, image_shape, shape)
            field = POLYGON_FIELD
        else:
            mask = rasterise_mask(region.png, image_shape, shape, max_pixels=self.context.max_image_pixels)
            field = MASK_FIELD
        region_pixels = int(mask.sum())
        if region_pixels == 0:
            raise InvalidParameterError(
                f"the region covers no pixel of the image at the query resolution {shape} (rows, columns)", field=field
            )
        clock.lap("region")

        features, catalog = inference.features, self.context.catalog
        thresholds = catalog.thresholds
        maxima = unit_max_activations(features)
        cells = contributing_cells(inference.mapping, mask)
        # Exact pruning: no contributing cell above the threshold means an empty intersection.
        candidates = np.flatnonzero((features[:, cells] > thresholds[:, None]).any(axis=1))
        ious = np.zeros(features.shape[0])
        fractions: dict[int, float] = {}
        for k in candidates:
            unit_mask = binarise(upsample(features[k], inference.mapping, shape), float(thresholds[k]))
            ious[k] = iou(unit_mask, mask)
            fractions[int(k)] = float(unit_mask.mean())
        clock.lap("query")

        matched = sorted((int(k) for k in np.flatnonzero(ious >= params.min_iou)), key=lambda k: (-ious[k], k))
        annotations = catalog.annotations_for(matched, naming_only=True) if matched else {}
        labelled = catalog.current_labels()
        clock.lap("annotations")

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
            **MethodResult.describing(inference, method=self.title, model=self.context.model, clock=clock),
            query_shape=shape,
            region_pixels=region_pixels,
            region_fraction=region_pixels / float(shape[0] * shape[1]),
            min_iou=params.min_iou,
            units=units,
            labels=label_reports(labelled, maxima=maxima, ious=ious),
            mapping=inference.mapping,
            best_map=features[matched[0]] if matched else None,
        )

    def response(self, result: RegionQueryResult, params: RegionParams) -> RegionQueryResponse:
        """The body of ``POST /query/region``."""
        from service.schemas import RegionQueryResponse  # the wire models import this module's results

        return RegionQueryResponse.from_result(result)


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
