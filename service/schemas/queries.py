"""The response of a region query: units matching a marked region, and per-label reports."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.queries import RegionQueryResult
from service.schemas.annotations import AnnotationOut, LatestAnnotations, UnitIndex
from service.schemas.image import ImageOut
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
    timings_ms: dict[str, float] = Field(
        description="Milliseconds per stage: decode, preprocess, inference, region, query, annotations, total."
    )

    @classmethod
    def from_result(cls, result: RegionQueryResult) -> RegionQueryResponse:
        return cls(
            method=result.method,
            model=ModelOut.from_info(result.model),
            image=ImageOut.from_result(result),
            query_shape=result.query_shape,
            region=RegionOut(pixels=result.region_pixels, fraction=result.region_fraction),
            min_iou=result.min_iou,
            units=[
                RegionUnit(
                    unit_id=u.unit_id,
                    iou=u.iou,
                    max_activation=u.max_activation,
                    threshold=u.threshold,
                    mask_fraction=u.mask_fraction,
                    annotations=AnnotationOut.from_records(u.annotations),
                )
                for u in result.units
            ],
            labels=[
                LabelReportOut(
                    label=r.label,
                    unit_ids=list(r.unit_ids),
                    mean_max_activation=r.mean_max_activation,
                    mean_iou=r.mean_iou,
                )
                for r in result.labels
            ],
            timings_ms=dict(result.timings_ms),
        )
