"""The dependencies read typed objects from app.state: 503 before start-up published them, and never a wrong type."""

from __future__ import annotations

import anyio
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from service.api.deps import bundle_file_url, get_metrics
from service.errors import NotReadyError
from service.metrics import Metrics


def _request(app: FastAPI) -> Request:
    return Request({"type": "http", "app": app, "method": "GET", "path": "/", "headers": [], "query_string": b""})


def test_getter_returns_what_the_lifespan_published() -> None:
    app = FastAPI()
    app.state.metrics = Metrics()
    try:
        assert anyio.run(get_metrics, _request(app)) is app.state.metrics
    finally:
        app.state.metrics.close()


def test_getter_is_not_ready_before_start_up() -> None:
    app = FastAPI()
    with pytest.raises(NotReadyError):
        anyio.run(get_metrics, _request(app))
    app.state.metrics = None  # what the lifespan leaves on shutdown
    with pytest.raises(NotReadyError):
        anyio.run(get_metrics, _request(app))


def test_getter_refuses_an_object_of_another_type() -> None:
    app = FastAPI()
    app.state.metrics = "not metrics"
    with pytest.raises(TypeError, match=r"app\.state\.metrics must be a Metrics, got str"):
        anyio.run(get_metrics, _request(app))


def test_getters_keep_their_names_for_overrides() -> None:
    assert get_metrics.__name__ == "get_metrics"
    assert get_metrics.__doc__


def test_bundle_file_url_names_the_serving_route() -> None:
    app = FastAPI()

    @app.get("/bundle-files/{path:path}", name="bundle_file")
    def bundle_file(path: str) -> str:
        return path

    request = Request({**_request(app).scope, "router": app.router, "server": ("testserver", 80), "scheme": "http"})
    url = anyio.run(bundle_file_url, request)
    assert url("units/7/patch_1.png") == "http://testserver/bundle-files/units/7/patch_1.png"
