"""Interactive queries on one mammogram (Lu & Perer, DESIGN.md §4): the service object of ``POST /query/region``.

The region comes from :mod:`service.regions`, the query itself is the
:mod:`service.methods.region_query` method, run on the request's one inference
step by the :class:`~service.explainer.Explainer`.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from service.explainer import Explainer
from service.inference import Stopwatch
from service.methods.region_query import (
    METHOD,
    LabelReport,
    RegionParams,
    RegionQuery,
    RegionQueryResult,
    UnitMatch,
    label_reports,
)
from service.regions import (
    MASK_FIELD,
    POLYGON_FIELD,
    QUERY_MAX_SIDE,
    MaskRegion,
    PolygonRegion,
    Region,
    parse_polygon,
    query_shape,
    rasterise_mask,
    rasterise_polygon,
    region_from_form,
)
from service.units import UnitCatalog

__all__ = [
    "MASK_FIELD",
    "METHOD",
    "POLYGON_FIELD",
    "QUERY_MAX_SIDE",
    "LabelReport",
    "MaskRegion",
    "PolygonRegion",
    "Region",
    "RegionQueries",
    "RegionQueryResult",
    "UnitMatch",
    "label_reports",
    "parse_polygon",
    "query_shape",
    "rasterise_mask",
    "rasterise_polygon",
    "region_from_form",
]


class RegionQueries:
    """Region queries and label reports with the loaded model; decoding and inference are the explainer's.

    Thread-safe; :meth:`query` blocks, so call it from a worker thread.
    """

    def __init__(self, *, explainer: Explainer, catalog: UnitCatalog, max_side: int = QUERY_MAX_SIDE) -> None:
        self.explainer = explainer
        self.method = RegionQuery(replace(explainer.context, catalog=catalog), max_side=max_side)

    def params(self, region: Region, *, min_iou: float = 0.2) -> RegionParams:
        """The request, checked before any work (:meth:`RegionQuery.params`)."""
        return self.method.params(region=region, min_iou=min_iou)

    def query(
        self,
        data: bytes,
        region: Region | RegionParams,
        *,
        min_iou: float = 0.2,
        cancel: threading.Event | None = None,
    ) -> RegionQueryResult:
        """Rank the units of the image in ``data`` by IoU with ``region``; report per label on this image.

        ``region`` may be the checked :class:`RegionParams` of :meth:`params`, which then stands for ``min_iou``.
        """
        params = region if isinstance(region, RegionParams) else self.params(region, min_iou=min_iou)
        return self.explainer.run(self.method, data, params, clock=Stopwatch(cancel=cancel))
