"""The response of a region query: units matching a marked region, and per-label reports."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.queries import RegionQueryResult
from service.schemas.annotations import LatestAnnotations, UnitIndex
from service.schemas.image import ImageOut
from service.schemas.maps import Map
from service.schemas.model import ModelOut


class RegionOut(BaseModel):
    """The queried region at the query resolution."""

    pixels: int = Field(description="Query pixels inside the region.")
    fraction: float = Field(description="Share of the image inside the region.")


class RegionUnit(BaseModel):
    """A unit whose binarised map overlaps the region by at least `min_iou`."""

    unit_id: UnitIndex
    iou: float = Field(description="|unit mask ∧ region| / |unit mask ∨ region| at the query resolution.")
    max_activation: float = Field(description="max_xy A_k(x, y) on this image.")
    threshold: float = Field(description="The unit's threshold (the ranking's whole-mammogram quantile).")
    mask_fraction: float = Field(description="Share of the image inside the unit's binarised map.")
    annotations: LatestAnnotations


class LabelReportOut(BaseModel):
    """One label on this image (Lu & Perer's label report)."""

    label: str
    unit_ids: list[int] = Field(description="Units whose latest label (per annotator, loaded bundle) is this one.")
    mean_max_activation: float = Field(description="Mean over those units of max_xy A_k(x, y) on this image.")
    mean_iou: float = Field(description="Mean over those units of the IoU of their binarised map with the region.")


class RegionQueryResponse(BaseModel):
    """Units ranked by how well their binarised maps match a region of one image, and per-label reports."""

    method: str
    model: ModelOut
    image: ImageOut
    query_shape: tuple[int, int] = Field(
        description="(rows, columns) at which unit masks and region were compared: the network input, downscaled "
        "so its longer side is at most 384."
    )
    region: RegionOut
    min_iou: float
    units: list[RegionUnit] = Field(description="Units with IoU ≥ min_iou, highest IoU first (ties: lower id).")
    labels: list[LabelReportOut] = Field(
        description="Every label of the loaded bundle's units, highest mean IoU first; units whose map misses the "
        "region count with IoU 0."
    )
    best_unit_map: Map | None = Field(
        description="A_k of the best-matching unit (the first of `units`) on the layer4 grid, to show beside the "
        "region; null when no unit matched."
    )
    timings_ms: dict[str, float] = Field(
        description="Milliseconds per stage: decode, preprocess, inference, region, query, annotations, total."
    )

    @classmethod
    def from_result(cls, result: RegionQueryResult) -> RegionQueryResponse:
        fields = {
            name: getattr(result, name) for name in ("method", "model", "query_shape", "min_iou", "units", "labels")
        }
        region = RegionOut(pixels=result.region_pixels, fraction=result.region_fraction)
        best = None if result.best_map is None else Map.from_array(result.best_map, result.mapping)
        return cls.model_validate(
            {
                **fields,
                "image": ImageOut.from_result(result),
                "region": region,
                "best_unit_map": best,
                "timings_ms": result.timings_ms,
            },
            from_attributes=True,
        )
