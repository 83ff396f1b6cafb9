"""The bundle's most suspicious hold-out patches: where to start looking, and what to query."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import BundleDep, BundleFileUrlDep
from service.schemas import ErrorResponse, SuspiciousPatchesResponse
from service.suspicious import suspicious_patches

router = APIRouter(tags=["suspicious"])


@router.get(
    "/suspicious-patches",
    response_model=SuspiciousPatchesResponse,
    responses={
        404: {
            "model": ErrorResponse,
            "description": "`not_in_bundle`: the bundle records no suspicious patches (an older bundle)",
        },
        422: {
            "model": ErrorResponse,
            "description": "`invalid_parameter` (a class the bundle does not list) or `validation_error`",
        },
    },
)
def list_suspicious_patches(
    bundle: BundleDep,
    url: BundleFileUrlDep,
    class_name: Annotated[
        str | None, Query(alias="class", description="Only this lesion class (e.g. `malignant`); default: every one.")
    ] = None,
    limit: Annotated[int | None, Query(ge=1, le=10_000, description="At most this many patches.")] = None,
) -> SuspiciousPatchesResponse:
    """List the hold-out cells the model finds most suspicious per lesion class, most probable first."""
    return SuspiciousPatchesResponse.from_list(suspicious_patches(bundle, class_name=class_name, limit=limit), url=url)
