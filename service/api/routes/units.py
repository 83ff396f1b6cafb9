"""Layer4 units: their ranking and their expert labels."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from service.api.deps import CatalogDep
from service.schemas import AnnotationIn, AnnotationOut, ErrorResponse, UnitHistory, UnitOut, UnitsResponse

router = APIRouter(prefix="/units", tags=["units"])

UnitId = Annotated[int, Path(description="0-based layer4 unit index.")]
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "`unknown_unit`"},
    422: {"model": ErrorResponse, "description": "`validation_error`"},
}

# Plain `def` routes: FastAPI runs them in its thread pool, because the store blocks.


@router.get("", response_model=UnitsResponse)
def list_units(catalog: CatalogDep) -> UnitsResponse:
    """List the units the bundle ranked for any class, with ranks, counts, coverage, thresholds and labels."""
    return UnitsResponse.from_overview(catalog.overview())


@router.get("/{unit_id}", response_model=UnitOut, responses=_UNKNOWN)
def get_unit(unit_id: UnitId, catalog: CatalogDep) -> UnitOut:
    """Show one unit, ranked or not: its threshold, ranks, counts and latest label per annotator."""
    return UnitOut.from_info(catalog.unit(unit_id))


@router.put(
    "/{unit_id}",
    response_model=AnnotationOut,
    status_code=201,
    responses={
        **_UNKNOWN,
        422: {"model": ErrorResponse, "description": "`validation_error` or `invalid_annotation`"},
        503: {"model": ErrorResponse, "description": "`annotation_conflict` or `store_unavailable`"},
    },
)
def annotate_unit(unit_id: UnitId, annotation: AnnotationIn, catalog: CatalogDep) -> AnnotationOut:
    """Record a new version of an annotator's label for a unit, under the loaded bundle."""
    record = catalog.annotate(unit_id, **annotation.model_dump())
    return AnnotationOut.from_record(record)


@router.get("/{unit_id}/history", response_model=UnitHistory, responses=_UNKNOWN)
def unit_history(unit_id: UnitId, catalog: CatalogDep) -> UnitHistory:
    """List every stored version of every label of a unit, oldest first, under any bundle."""
    return UnitHistory(unit_id=unit_id, versions=[AnnotationOut.from_record(r) for r in catalog.history(unit_id)])
