"""Explanation methods without a route of their own (:mod:`service.methods`), each served at ``POST /methods/{name}``.

The built-in methods have theirs (``/explain``, ``/query/region``); a method
registered with ``route = None`` gets one here when the app is created, taking
the upload (and ``aux`` when the method uses it) as a form and its parameters
from the query string (:meth:`~service.methods.base.Method.parse`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from fastapi import APIRouter, Request, Response

from service.api.deps import ExplainerDep, MetricsDep, PoolDep, SettingsDep
from service.api.forms import UPLOAD_ERRORS, error_responses, upload_body
from service.api.upload import read_form
from service.auxiliary import FIELD as AUX_FIELD
from service.auxiliary import FIELD_DESCRIPTION as AUX_DESCRIPTION
from service.auxiliary import parse_aux
from service.errors import InferenceCancelledError
from service.explainer import render
from service.inference import Stopwatch
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
        params = method.parse(request.query_params)
        async with pool.admit():
            received = time.perf_counter()
            form = await read_form(
                request, max_bytes=settings.max_upload_bytes, fields=(AUX_FIELD,) if method.takes_aux else ()
            )
            data = form.files["file"]
            aux = parse_aux(form.fields.get(AUX_FIELD), explainer.aux_features) if method.takes_aux else None
            submitted = time.perf_counter()

            def job(cancel: threading.Event) -> tuple[bytes, Mapping[str, float]]:
                clock = Stopwatch.for_request(cancel=cancel, submitted_at=submitted, received_at=received)
                result = explainer.run(method, data, params, aux=aux, clock=clock)
                if cancel.is_set():
                    raise InferenceCancelledError(f"{name} abandoned before encoding")
                return render(method, result, params, clock)

            content, timings = await pool.run(job)
        metrics.observe_stages(timings)
        return Response(content=content, media_type="application/json")

    return run_method
