"""Explanations of uploaded mammograms."""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from service.api.deps import ExplainerDep, MetricsDep, PoolDep, SettingsDep
from service.api.upload import read_upload
from service.schemas import ErrorResponse, ExplainResponse

router = APIRouter(tags=["explain"])

# The upload is parsed by service.api.upload (to cap its size while it
# streams in), so FastAPI cannot infer the request body; describe it here.
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A mammogram as PNG (8 or 16 bit), TIFF, JPEG or DICOM.",
                        }
                    },
                }
            }
        },
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "`empty_upload`"},
    413: {"model": ErrorResponse, "description": "`upload_too_large` or `image_too_large`"},
    415: {"model": ErrorResponse, "description": "`unsupported_media_type`: not multipart, or not PNG/TIFF/JPEG/DICOM"},
    422: {"model": ErrorResponse, "description": "`corrupt_image`, `invalid_parameter` or `validation_error`"},
    503: {"model": ErrorResponse, "description": "`not_ready`, or `busy` when the waiting line is full"},
    504: {"model": ErrorResponse, "description": "`inference_timeout`"},
}


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
) -> Response:
    """Classify an uploaded mammogram and explain it by its CAM and its most influential named units."""
    k = settings.top_k if top_k is None else top_k
    explainer.validate(class_name=class_name, top_k=k)
    async with pool.admit():
        data = await read_upload(request, max_bytes=settings.max_upload_bytes)
        submitted = time.perf_counter()

        def job(cancel: threading.Event) -> ExplainResponse:
            result = explainer.explain(data, class_name=class_name, top_k=k, cancel=cancel, submitted_at=submitted)
            return ExplainResponse.from_result(result)

        body = await pool.run(job)
    metrics.observe_stages(body.timings_ms)
    # Serialised here rather than by FastAPI so no second validation pass runs over the maps.
    return Response(content=body.model_dump_json(), media_type="application/json")
