"""Layer4 units: their ranking, their expert labels, their visualisations and the unit embedding."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from fastapi.responses import FileResponse

from service.api.deps import (
    AnnotatorDep,
    BundleDep,
    BundleFileUrlDep,
    CatalogDep,
    PoolDep,
    SettingsDep,
    UnitPatchesDep,
)
from service.api.preconditions import if_match_precondition
from service.auth import annotator_for
from service.schemas import (
    AnnotationBatchIn,
    AnnotationBatchOut,
    AnnotationIn,
    AnnotationOut,
    EmbeddingResponse,
    ErrorResponse,
    LabelVocabularyResponse,
    UnitHistory,
    UnitOut,
    UnitsResponse,
    UnitVisualisation,
)
from service.units import (
    LabelWrite,
    PatchKind,
    RenderedUnit,
    embedding_with_labels,
    find_bundle_file,
    label_vocabulary,
    visualisation_entry,
)

router = APIRouter(tags=["units"])

UnitId = Annotated[int, Path(description="0-based layer4 unit index.")]
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "`unknown_unit`"},
    422: {"model": ErrorResponse, "description": "`validation_error`"},
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "`validation_error`, `invalid_annotation` or `invalid_parameter`"},
    503: {"model": ErrorResponse, "description": "`annotation_conflict` or `store_unavailable`"},
    507: {"model": ErrorResponse, "description": "`store_full`: the database has no disk space; nothing was stored"},
}
_ETAG_HEADER = {
    "ETag": {
        "description": "Strong tag of the unit's labels under the loaded bundle; send it back as If-Match.",
        "schema": {"type": "string"},
    }
}
_NOT_IN_BUNDLE = "`not_in_bundle`"

# Plain `def` routes: FastAPI runs them in its thread pool, because the store blocks.
# /units/embedding, /units/labels and /units/batch come before /units/{unit_id}, which would otherwise claim them.


@router.get("/units", response_model=UnitsResponse)
def list_units(catalog: CatalogDep) -> UnitsResponse:
    """List the units the bundle ranked for any class, with ranks, counts, coverage, thresholds and labels."""
    return UnitsResponse.from_overview(catalog.overview())


@router.get(
    "/units/embedding",
    response_model=EmbeddingResponse,
    responses={404: {"model": ErrorResponse, "description": f"{_NOT_IN_BUNDLE}: the bundle has no embedding"}},
)
def unit_embedding(catalog: CatalogDep) -> EmbeddingResponse:
    """Place every unit in 2-D (PCA of its max activations over reference images), with its latest labels."""
    return EmbeddingResponse.from_embedding(embedding_with_labels(catalog.bundle, catalog.all_labels()))


@router.get("/units/labels", response_model=LabelVocabularyResponse)
def list_labels(catalog: CatalogDep) -> LabelVocabularyResponse:
    """List every label given to units that names a phenomenon, with its category, to offer when labelling."""
    return LabelVocabularyResponse.from_terms(label_vocabulary(catalog.all_labels()))


@router.post(
    "/units/batch",
    response_model=AnnotationBatchOut,
    status_code=201,
    responses={
        **_WRITE_ERRORS,
        422: {
            "model": ErrorResponse,
            "description": (
                "`validation_error`, `invalid_annotation` or `invalid_parameter` (an unknown unit); `field` names "
                "the bad item as `annotations.<index>.<field>`, and nothing was stored"
            ),
        },
    },
)
def annotate_units(batch: AnnotationBatchIn, catalog: CatalogDep, principal: AnnotatorDep) -> AnnotationBatchOut:
    """Label a group of units at once, in one transaction: every label is stored, or none is."""
    writes = [
        LabelWrite(
            **{
                **item.model_dump(),
                "annotator": annotator_for(principal, item.annotator, field=f"annotations.{index}.annotator"),
            }
        )
        for index, item in enumerate(batch.annotations)
    ]
    return AnnotationBatchOut(annotations=AnnotationOut.from_records(catalog.annotate_many(writes)))


@router.get("/units/{unit_id}", response_model=UnitOut, responses={**_UNKNOWN, 200: {"headers": _ETAG_HEADER}})
def get_unit(unit_id: UnitId, catalog: CatalogDep, response: Response) -> UnitOut:
    """Show one unit, ranked or not: its threshold, ranks, counts and latest label per annotator, with an ETag."""
    info = catalog.unit(unit_id)
    response.headers["ETag"] = info.etag
    return UnitOut.from_info(info)


@router.put(
    "/units/{unit_id}",
    response_model=AnnotationOut,
    status_code=201,
    responses={
        **_UNKNOWN,
        **_WRITE_ERRORS,
        201: {"headers": _ETAG_HEADER},
        412: {"model": ErrorResponse, "description": "`precondition_failed`: If-Match is not the unit's ETag"},
        428: {"model": ErrorResponse, "description": "`precondition_required`: no If-Match (require_if_match)"},
    },
)
def annotate_unit(
    unit_id: UnitId,
    annotation: AnnotationIn,
    catalog: CatalogDep,
    settings: SettingsDep,
    principal: AnnotatorDep,
    response: Response,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description=(
                "The ETag of GET /units/{unit_id}: the label is stored only if nobody labelled the unit since "
                "(else 412, nothing stored). Optional unless require_if_match is set."
            ),
        ),
    ] = None,
) -> AnnotationOut:
    """Record a new version of an annotator's label for a unit, under the loaded bundle; returns the new ETag."""
    catalog.check(unit_id)
    precondition = if_match_precondition(if_match, unit_id=unit_id, required=settings.require_if_match)
    write = LabelWrite(
        **{**annotation.model_dump(), "unit_id": unit_id, "annotator": annotator_for(principal, annotation.annotator)}
    )
    written = catalog.annotate(write, precondition=precondition)
    response.headers["ETag"] = written.etag
    return AnnotationOut.from_record(written.record)


@router.get("/units/{unit_id}/history", response_model=UnitHistory, responses=_UNKNOWN)
def unit_history(unit_id: UnitId, catalog: CatalogDep) -> UnitHistory:
    """List every stored version of every label of a unit, oldest first, under any bundle."""
    return UnitHistory(unit_id=unit_id, versions=AnnotationOut.from_records(catalog.history(unit_id)))


_RENDER_ERRORS: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "`busy`: every inference worker is busy and the line is full"},
    504: {"model": ErrorResponse, "description": "`inference_timeout`: rendering took longer than request_timeout_s"},
}


async def _rendered(unit_id: int, renderer: UnitPatchesDep, pool: PoolDep) -> RenderedUnit:
    """The unit's on-demand render: from the cache, else drawn in the inference pool (it runs the backend)."""
    found = renderer.cached(unit_id)
    if found is not None:
        return found

    def job(cancel: threading.Event) -> RenderedUnit:
        return renderer.render(unit_id, cancel=cancel)

    async with pool.admit():
        return await pool.run(job)


@router.get(
    "/units/{unit_id}/visualisation",
    response_model=UnitVisualisation,
    responses={
        **_UNKNOWN,
        **_RENDER_ERRORS,
        404: {
            "model": ErrorResponse,
            "description": f"`unknown_unit`, or {_NOT_IN_BUNDLE}: the bundle lists no top patches for the unit",
        },
    },
)
async def unit_visualisation(
    unit_id: UnitId,
    request: Request,
    catalog: CatalogDep,
    url: BundleFileUrlDep,
    renderer: UnitPatchesDep,
    pool: PoolDep,
) -> UnitVisualisation:
    """Show any unit's top hold-out patches, plain and masked, with their mammograms (unranked: drawn on demand)."""
    unit_id = catalog.check(unit_id)
    index = catalog.bundle.unit_index
    if index is not None and str(unit_id) in index:
        return UnitVisualisation.from_entry(unit_id, visualisation_entry(catalog.bundle, unit_id), url=url)
    if renderer.table is None:  # an older bundle: the ranked units' PNGs are all it shows
        visualisation_entry(catalog.bundle, unit_id)
    rendered = await _rendered(unit_id, renderer, pool)

    def image_url(rank: int, kind: str) -> str:
        return str(request.url_for("unit_patch_image", unit_id=unit_id, rank=rank, kind=kind))

    return UnitVisualisation.from_rendered(rendered, url=image_url)


@router.get(
    "/units/{unit_id}/visualisation/{rank}/{kind}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        **_RENDER_ERRORS,
        404: {
            "model": ErrorResponse,
            "description": f"`unknown_unit`, or {_NOT_IN_BUNDLE}: no such patch, or its hold-out image is unavailable",
        },
        422: {"model": ErrorResponse, "description": "`validation_error`"},
    },
)
async def unit_patch_image(
    unit_id: UnitId,
    rank: Annotated[int, Path(ge=1, description="The patch's rank, 1 = the unit's strongest.")],
    kind: Annotated[PatchKind, Path(description="`patch`, `masked` (outside the unit's mask dimmed) or `context`.")],
    catalog: CatalogDep,
    renderer: UnitPatchesDep,
    pool: PoolDep,
) -> Response:
    """Send one PNG of a unit's top patches rendered on demand (a unit outside the ranked set)."""
    unit_id = catalog.check(unit_id)
    rendered = await _rendered(unit_id, renderer, pool)
    return Response(
        content=rendered.png(rank, kind),
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/bundle-files/{path:path}",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        404: {
            "model": ErrorResponse,
            "description": f"{_NOT_IN_BUNDLE}: not a unit visualisation, suspicious patch image or quality figure of "
            "the bundle",
        },
    },
)
def bundle_file(
    path: Annotated[
        str,
        Path(
            description="A file path from GET /units/{unit_id}/visualisation (e.g. units/7/patch_1.png) or the "
            "figure_url of GET /quality (quality/worst_cases.png), or an image URL of GET /suspicious-patches."
        ),
    ],
    bundle: BundleDep,
) -> FileResponse:
    """Send a PNG that the loaded bundle's meta.json lists under units/ or suspicious/, or directly under quality/."""
    found = find_bundle_file(bundle, path)
    return FileResponse(
        found.path,
        media_type="image/png",
        headers={
            "ETag": f'"{found.sha256}"',
            "Cache-Control": "private, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        },
    )
