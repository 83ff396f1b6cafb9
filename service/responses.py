"""The last stage of an explanation: encode maps and overlays, serialise, time it (the ``encode`` stage).

Runs in the worker thread with the rest of the explanation, so neither the
encoding nor the JSON serialisation of a large response runs on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from service.explainer import ExplanationResult
from service.schemas import ExplainResponse, MapEncoding


def render_explanation(
    result: ExplanationResult, *, maps: MapEncoding, overlay_max_side: int | None
) -> tuple[bytes, Mapping[str, float]]:
    """The JSON body for ``result`` and its stage timings, ``encode`` and ``total`` included.

    ``encode`` covers building the maps and overlays; the final serialisation
    (a few milliseconds) happens after the timings are written into the body.
    """
    started = time.perf_counter()
    body = ExplainResponse.from_result(result, maps=maps, overlay_max_side=overlay_max_side)
    timings = {stage: ms for stage, ms in result.timings_ms.items() if stage != "total"}
    timings["encode"] = (time.perf_counter() - started) * 1000.0
    timings["total"] = sum(timings.values())
    body.timings_ms = timings
    return body.model_dump_json().encode(), timings
