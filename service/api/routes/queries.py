"""Interactive queries on an uploaded mammogram (Lu & Perer): which units match a region the user marks."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from service.api.deps import PoolDep, QueriesDep, SettingsDep
from service.api.forms import UPLOAD_ERRORS, error_responses, upload_body
from service.api.upload import read_form
from service.queries import MASK_FIELD, POLYGON_FIELD, region_from_form
from service.schemas import RegionQueryResponse

router = APIRouter(tags=["queries"])

_REGION_BODY = upload_body(
    image_description="A mammogram as PNG (8 or 16 bit), TIFF, JPEG or DICOM; limits as /explain.",
    **{
        POLYGON_FIELD: {
            "type": "string",
            "description": (
                "The region as a JSON list of at least 3 points [x, y], x = column and y = row in the uploaded "
                "image's pixels (pixel centres at whole numbers), e.g. [[120, 80], [200, 80], [160, 150]]. Give "
                "this or `mask`."
            ),
        },
        MASK_FIELD: {
            "type": "string",
            "format": "binary",
            "description": (
                "The region as a PNG of the image's size: pixels at half intensity or more are inside. Counts "
                "against max_upload_bytes together with the image. Give this or `polygon`."
            ),
        },
    },
)
_ERRORS = error_responses(
    UPLOAD_ERRORS
    | {
        415: "`unsupported_media_type` (not multipart; an image not PNG/TIFF/JPEG/DICOM; a mask not PNG) "
        "or `unsupported_dicom`",
        422: (
            "`invalid_parameter` (no region, both, a malformed polygon, a mask of another size, a region covering "
            "no pixel), `corrupt_image`, `no_pixel_data` or `validation_error`"
        ),
    }
)


@router.post("/query/region", response_model=RegionQueryResponse, responses=_ERRORS, openapi_extra=_REGION_BODY)
async def query_region(
    request: Request,
    settings: SettingsDep,
    queries: QueriesDep,
    pool: PoolDep,
    min_iou: Annotated[
        float, Query(gt=0, le=1, description="Smallest IoU of a unit's binarised map with the region to list it.")
    ] = 0.2,
) -> Response:
    """Rank the units by IoU of their binarised maps with a marked region of an uploaded image; report per label."""
    method = queries.method
    async with pool.admit():
        form = await read_form(
            request, max_bytes=settings.max_upload_bytes, optional_files=(MASK_FIELD,), fields=(POLYGON_FIELD,)
        )
        region = region_from_form(polygon=form.fields.get(POLYGON_FIELD), mask=form.files.get(MASK_FIELD))
        params = queries.params(region, min_iou=min_iou)
        data = form.files["file"]

        def job(cancel: threading.Event) -> bytes:
            result = queries.query(data, params, cancel=cancel)
            return method.response(result, params).model_dump_json().encode()

        content = await pool.run(job)
    return Response(content=content, media_type="application/json")
