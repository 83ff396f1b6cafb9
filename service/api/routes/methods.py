"""Explanation methods without a route of their own (:mod:`service.methods`), each served at ``POST /methods/{name}``.

The built-in methods have theirs (``/explain``, ``/query/region``); a method
registered with ``route = None`` gets one here when the app is created, taking
the upload (and ``aux`` when the method uses it) as a form and its parameters
from the query string (:meth:`~service.methods.base.Method.parse`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter, Request, Response

from service.api.deps import ExplainerDep, MetricsDep, PoolDep, SettingsDep
from service.api.forms import UPLOAD_ERRORS, error_responses, upload_body
from service.api.serving import serve_upload
from service.auxiliary import FIELD as AUX_FIELD
from service.auxiliary import FIELD_DESCRIPTION as AUX_DESCRIPTION
from service.methods import AnyMethod

_ERRORS = error_responses(
    UPLOAD_ERRORS
    | {
        415: "`unsupported_media_type` or `unsupported_dicom`",
        422: "`invalid_parameter` (its `field` names the parameter), `corrupt_image` or `no_pixel_data`",
    }
)


def router_for(methods: Iterable[type[AnyMethod]]) -> APIRouter:
    """A router with ``POST /methods/{name}`` for each of ``methods``."""
    router = APIRouter(tags=["methods"])
    for cls in methods:
        fields = {AUX_FIELD: {"type": "string", "description": AUX_DESCRIPTION}} if cls.takes_aux else {}
        router.add_api_route(
            f"/methods/{cls.name}",
            _endpoint(cls.name),
            methods=["POST"],
            name=cls.name,
            description=f"Explain an uploaded mammogram by {cls.title}.",
            responses=_ERRORS,
            openapi_extra=upload_body(**fields),
        )
    return router


def _endpoint(name: str) -> Callable[..., Awaitable[Response]]:
    async def run_method(
        request: Request, settings: SettingsDep, explainer: ExplainerDep, pool: PoolDep, metrics: MetricsDep
    ) -> Response:
        method = explainer.method(name)
        return await serve_upload(
            request,
            method,
            method.parse(request.query_params),
            explainer=explainer,
            pool=pool,
            metrics=metrics,
            max_upload_bytes=settings.max_upload_bytes,
        )

    return run_method
