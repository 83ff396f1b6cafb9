"""The loaded bundle's explanation-quality report: do its explanations localise and name what they show?"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import BundleFileUrlDep, QualityDep
from service.schemas import ErrorResponse, QualityResponse

router = APIRouter(tags=["quality"])


@router.get(
    "/quality",
    response_model=QualityResponse,
    responses={
        404: {
            "model": ErrorResponse,
            "description": "`no_quality_report`: the bundle has no explanation-quality report (older bundle, or no "
            "lesion masks in its test split)",
        },
        422: {"model": ErrorResponse, "description": "`validation_error`"},
    },
)
async def quality_report(
    quality: QualityDep,
    url: BundleFileUrlDep,
    per_image: Annotated[
        bool, Query(description="Include the report's per-image rows, which grow with the data set.")
    ] = False,
) -> QualityResponse:
    """Report how well the bundle's explanations localise and name lesions: AUC, pointing game, concept naming."""
    return QualityResponse.from_report(quality, per_image=per_image, url=url)
