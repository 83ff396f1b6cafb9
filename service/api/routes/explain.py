"""Explanations of uploaded mammograms."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from service.api.deps import ExplainerDep, MetricsDep, PoolDep, SettingsDep
from service.api.forms import UPLOAD_ERRORS, error_responses, upload_body
from service.api.serving import serve_upload
from service.auxiliary import FIELD as AUX_FIELD
from service.auxiliary import FIELD_DESCRIPTION as AUX_DESCRIPTION
from service.schemas import ExplainResponse, MapEncoding

router = APIRouter(tags=["explain"])

_UPLOAD_BODY = upload_body(**{AUX_FIELD: {"type": "string", "description": AUX_DESCRIPTION}})
_ERRORS = error_responses(
    UPLOAD_ERRORS
    | {
        413: "`upload_too_large`, or `image_too_large`: the header declares too many pixels (refused before decoding)",
        415: (
            "`unsupported_media_type`: not multipart, or not PNG/TIFF/JPEG/DICOM; `unsupported_dicom`: a DICOM "
            "image with a transfer syntax without decoder, several frames, or an unsupported colour model"
        ),
        422: (
            "`corrupt_image` (truncated or corrupt, the message says which), `no_pixel_data` (a DICOM that holds "
            "no image), `invalid_parameter` (its `field` names the parameter, e.g. `top_k` or `aux.age`) or "
            "`validation_error`"
        ),
        503: "`not_ready`, `busy` when the waiting line is full, or `precision_overflow` (fp16 overflowed on this image)",
    }
)


@router.post("/explain", response_model=ExplainResponse, responses=_ERRORS, openapi_extra=_UPLOAD_BODY)
async def explain(
    request: Request,
    settings: SettingsDep,
    explainer: ExplainerDep,
    pool: PoolDep,
    metrics: MetricsDep,
    class_name: Annotated[
        str | None, Query(description="Class to explain (one of the model's classes); default: the predicted class.")
    ] = None,
    top_k: Annotated[
        int | None, Query(ge=1, description="How many units to return (1 to max_top_k); default: the top_k setting.")
    ] = None,
    maps: Annotated[
        MapEncoding,
        Query(description="How maps are written: `uint16` (compact, base64 with scale and offset) or `json` (lists)."),
    ] = "uint16",
    overlays: Annotated[
        Literal["none", "png"],
        Query(description="`png` adds PNG overlays of the CAM and each returned unit's map (overlay_max_side)."),
    ] = "none",
) -> Response:
    """Classify an uploaded mammogram and explain it by its CAM and its most influential named units."""
    params = explainer.validate(
        class_name=class_name,
        top_k=settings.top_k if top_k is None else top_k,
        maps=maps,
        overlay_max_side=settings.overlay_max_side if overlays == "png" else None,
    )
    return await serve_upload(
        request,
        explainer.deepminer,
        params,
        explainer=explainer,
        pool=pool,
        metrics=metrics,
        max_upload_bytes=settings.max_upload_bytes,
    )
