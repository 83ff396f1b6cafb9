"""Explanation methods by name: a method registered here is served over HTTP, and every request infers once.

The counters wrap the real functions (they call through), so the responses stay
the service's own; they count how often each step of one request runs.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

import deepminer.dicom
import deepminer.imaging
import service.inference
import service.methods.deepminer
import service.methods.region_query
from deepminer.formulas import unit_max_activations
from service.errors import InvalidParameterError
from service.inference import Inference, InferenceEngine, Stopwatch
from service.methods import METHODS, MethodContext
from service.methods.deepminer import DeepMiner
from service.methods.region_query import RegionQuery

ClientFactory = Callable[..., AbstractContextManager[TestClient]]


@dataclass(frozen=True)
class StrongestUnitsParams:
    count: int


class StrongestUnitsOut(BaseModel):
    method: str
    units: list[int]
    max_activations: list[float]
    timings_ms: dict[str, float]


class StrongestUnits:
    """A toy method: the ``count`` units with the largest ``max_xy A_k``, ties to the lower id."""

    name: ClassVar[str] = "strongest_units"
    title: ClassVar[str] = "the units with the largest maximum activation"
    takes_aux: ClassVar[bool] = False
    route: ClassVar[str | None] = None

    def __init__(self, context: MethodContext) -> None:
        self.context = context

    def parse(self, query: Mapping[str, str]) -> StrongestUnitsParams:
        count = int(query.get("count", "3"))
        if not 1 <= count <= self.context.bundle.num_units:
            raise InvalidParameterError(f"count must be between 1 and the number of units; got {count}", field="count")
        return StrongestUnitsParams(count=count)

    def run(self, inference: Inference, params: StrongestUnitsParams, clock: Stopwatch) -> StrongestUnitsOut:
        maxima = unit_max_activations(inference.features)
        units = sorted(range(len(maxima)), key=lambda k: (-maxima[k], k))[: params.count]
        clock.lap("strongest")
        return StrongestUnitsOut(
            method=self.title,
            units=units,
            max_activations=[float(maxima[k]) for k in units],
            timings_ms=dict(clock.timings()),
        )

    def response(self, result: StrongestUnitsOut, params: StrongestUnitsParams) -> BaseModel:
        return result


@pytest.fixture
def toy_method() -> Iterator[type[StrongestUnits]]:
    """The toy method, registered with its one line for the test and forgotten after it."""
    METHODS.register(StrongestUnits.name, StrongestUnits)
    try:
        yield StrongestUnits
    finally:
        METHODS.unregister(StrongestUnits.name)


def test_a_registered_method_is_served_over_http(
    toy_method: type[StrongestUnits], make_client: ClientFactory, phantom_png: bytes
) -> None:
    with make_client() as client:
        response = client.post(
            "/methods/strongest_units", params={"count": 4}, files={"file": ("m.png", phantom_png, "image/png")}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        explainer = client.app.state.explainer  # type: ignore[attr-defined]
        _, features = explainer.forward(explainer.preprocess(explainer.decode(phantom_png).pixels))
        spec = client.app.openapi()  # type: ignore[attr-defined]
        refused = client.post(
            "/methods/strongest_units", params={"count": 0}, files={"file": ("m.png", phantom_png, "image/png")}
        )
    maxima = unit_max_activations(features)
    expected = sorted(range(len(maxima)), key=lambda k: (-maxima[k], k))[:4]
    assert body["method"] == StrongestUnits.title
    assert body["units"] == expected
    assert body["max_activations"] == pytest.approx([float(maxima[k]) for k in expected])
    assert list(body["timings_ms"]) == ["upload", "queue", "decode", "preprocess", "inference", "strongest", "encode", "total"]
    operation = spec["paths"]["/methods/strongest_units"]["post"]
    assert operation["operationId"] == "methods-strongest_units"
    assert operation["requestBody"]["content"]["multipart/form-data"]["schema"]["required"] == ["file"]
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "count"


def test_without_the_registration_there_is_no_route(make_client: ClientFactory, phantom_png: bytes) -> None:
    with make_client() as client:
        response = client.post("/methods/strongest_units", files={"file": ("m.png", phantom_png, "image/png")})
    assert response.status_code == 404


def test_builtin_methods_are_registered_by_name() -> None:
    assert METHODS.names()[:2] == ("deepminer", "region_query")
    assert METHODS.get("deepminer") is DeepMiner and METHODS.get("region_query") is RegionQuery
    with pytest.raises(LookupError, match="registered: deepminer, region_query"):
        METHODS.get("gradcam")
    with pytest.raises(ValueError, match="already registered"):
        METHODS.register("deepminer", DeepMiner)


# -- one inference step per request ------------------------------------------


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each step ran: decode, sniff, validation, preprocessing, forward, max_xy A, stopwatches."""
    counts: Counter[str] = Counter()

    def spy(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            counts[label] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    spy(service.inference, "decode_upload", "decode")
    spy(deepminer.imaging, "decode_image", "decode_image")
    spy(deepminer.imaging, "decode_raster", "decode_raster")
    spy(deepminer.dicom, "looks_like_dicom", "sniff")
    spy(deepminer.imaging, "network_input", "preprocess")
    spy(InferenceEngine, "forward", "forward")
    spy(DeepMiner, "params", "validate")
    spy(RegionQuery, "params", "validate")
    spy(service.methods.deepminer, "unit_max_activations", "max_xy")
    spy(service.methods.region_query, "unit_max_activations", "max_xy")
    spy(Stopwatch, "__init__", "stopwatch")
    return counts


ONCE = {"decode": 1, "decode_raster": 1, "sniff": 1, "preprocess": 1, "forward": 1, "validate": 1, "max_xy": 1,
        "stopwatch": 1}


def test_explain_runs_each_step_once(client: TestClient, phantom_png: bytes, calls: Counter[str]) -> None:
    response = client.post(
        "/explain", params={"top_k": 3}, files={"file": ("m.png", phantom_png, "image/png")}
    )
    assert response.status_code == 200, response.text
    assert dict(calls) == ONCE


@pytest.mark.parametrize("region", ["polygon", "mask"])
def test_region_query_runs_each_step_once(
    client: TestClient, phantom_png: bytes, calls: Counter[str], region: str
) -> None:
    files: dict[str, Any] = {"file": ("m.png", phantom_png, "image/png")}
    data: dict[str, str] = {}
    if region == "polygon":
        data["polygon"] = json.dumps([[40, 60], [200, 60], [120, 300]])
    else:
        height, width = client.app.state.explainer.decode(phantom_png).pixels.shape  # type: ignore[attr-defined]
        calls.clear()  # that decode was the test's own
        mask = np.zeros((height, width), dtype=np.uint8)
        mask[height // 4 : height // 2, width // 4 : width // 2] = 255
        files["mask"] = ("region.png", _png(mask), "image/png")
    response = client.post("/query/region", params={"min_iou": 0.01}, files=files, data=data)
    assert response.status_code == 200, response.text
    # The mask is a second image: it is decoded as the PNG it was checked to be, never sniffed.
    assert dict(calls) == ONCE | ({"decode_raster": 2} if region == "mask" else {})


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()
