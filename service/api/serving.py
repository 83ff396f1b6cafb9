"""One explanation request on an uploaded image, from the waiting line to the response: what every upload route shares."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TypeVar

from fastapi import Request, Response

from service.api.upload import read_form
from service.auxiliary import FIELD as AUX_FIELD
from service.auxiliary import parse_aux
from service.errors import InferenceCancelledError
from service.explainer import Explainer, render
from service.inference import Stopwatch
from service.methods import Method
from service.metrics import Metrics
from service.pool import InferencePool

ParamsT = TypeVar("ParamsT")
ResultT = TypeVar("ResultT")


async def serve_upload(
    request: Request,
    method: Method[ParamsT, ResultT],
    params: ParamsT,
    *,
    explainer: Explainer,
    pool: InferencePool,
    metrics: Metrics,
    max_upload_bytes: int,
) -> Response:
    """``method`` with validated ``params`` on the image uploaded in ``request``, as a JSON response.

    Takes a place in ``pool``'s line, reads the form (with ``aux`` when the method takes it), then runs the
    method and :func:`~service.explainer.render` in a worker on a :meth:`Stopwatch.for_request` clock, so the
    timings start with ``upload`` and ``queue``; ``metrics`` records them.
    """
    async with pool.admit():
        received = time.perf_counter()
        form = await read_form(request, max_bytes=max_upload_bytes, fields=(AUX_FIELD,) if method.takes_aux else ())
        data = form.files["file"]
        aux = parse_aux(form.fields.get(AUX_FIELD), explainer.aux_features) if method.takes_aux else None
        submitted = time.perf_counter()

        def job(cancel: threading.Event) -> tuple[bytes, Mapping[str, float]]:
            clock = Stopwatch.for_request(cancel=cancel, submitted_at=submitted, received_at=received)
            result = explainer.run(method, data, params, aux=aux, clock=clock)
            if cancel.is_set():
                raise InferenceCancelledError(f"the {method.name} request was abandoned before encoding")
            return render(method, result, params, clock)

        content, timings = await pool.run(job)
    metrics.observe_stages(timings)
    # Serialised in the worker (render) rather than by FastAPI: no second validation pass over the maps, and
    # no large JSON written on the event loop.
    return Response(content=content, media_type="application/json")
