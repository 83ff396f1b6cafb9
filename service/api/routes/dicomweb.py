"""Explanations of images held by a PACS, fetched and stored back over DICOMweb."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from service.api.deps import ExplainerDep, PoolDep, SettingsDep
from service.pacs.schemas import DicomWebExplainRequest, DicomWebExplainResponse
from service.pacs.service import PacsService
from service.schemas import ErrorResponse

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])


async def get_pacs(request: Request, settings: SettingsDep, explainer: ExplainerDep, pool: PoolDep) -> PacsService:
    """The PACS service for the configured DICOMweb server; 503 ``pacs_not_configured`` when there is none."""
    return PacsService.from_settings(settings, explainer=explainer, pool=pool, software_version=request.app.version)


PacsDep = Annotated[PacsService, Depends(get_pacs)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "`instance_not_found`: the PACS holds no such instance"},
    413: {"model": ErrorResponse, "description": "`instance_too_large` (max_upload_bytes) or `image_too_large`"},
    415: {
        "model": ErrorResponse,
        "description": "`unsupported_dicom`: a transfer syntax without decoder, multi-frame…",
    },
    422: {
        "model": ErrorResponse,
        "description": "`validation_error`, `invalid_parameter`, `corrupt_image` or `no_pixel_data` (not an image)",
    },
    502: {
        "model": ErrorResponse,
        "description": "`pacs_unavailable` (no connection, 5xx or refused access after the retries) or "
        "`pacs_store_failed` (STOW-RS refused results)",
    },
    503: {
        "model": ErrorResponse,
        "description": "`pacs_not_configured`, `not_ready`, `busy`, or `store_unavailable` (the unit labels cannot "
        "be read, so no result is stored; with `store_results` false the answer comes without labels instead)",
    },
    504: {"model": ErrorResponse, "description": "`pacs_timeout` (after the retries) or `inference_timeout`"},
}


@router.post("/explain", response_model=DicomWebExplainResponse, responses=_ERRORS)
async def explain_instance(
    body: DicomWebExplainRequest, settings: SettingsDep, pacs: PacsDep
) -> DicomWebExplainResponse:
    """Retrieve an image from the PACS by its UIDs (WADO-RS), explain it, and store the DICOM results in its study."""
    explanation = await pacs.explain_instance(
        study_uid=body.study_uid,
        series_uid=body.series_uid,
        sop_uid=body.sop_uid,
        store=settings.dicomweb_store_results if body.store_results is None else body.store_results,
        class_name=body.class_name,
        top_k=settings.top_k if body.top_k is None else body.top_k,
    )
    return DicomWebExplainResponse.from_explanation(explanation)
