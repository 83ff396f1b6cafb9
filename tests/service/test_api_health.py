"""Liveness, readiness, Prometheus metrics and the JSON request log."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from annotations import AnnotationStore
from service.api.deps import get_store
from service.logging import JsonFormatter
from service.main import create_app
from service.settings import Settings


def test_probes_before_start_up(tiny_bundle: Path, tmp_path: Path) -> None:
    app = create_app(Settings(bundle=tiny_bundle, database_url=f"sqlite:///{tmp_path / 'l.db'}"))
    client = TestClient(app)  # not entered: the lifespan has not run
    assert client.get("/healthz").json() == {"status": "ok"}
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
    assert client.post("/explain", files={"file": ("m.png", b"x")}).status_code == 503
    assert client.get("/units").status_code == 503


def test_ready_after_start_up(client: TestClient, tiny_bundle: Path) -> None:
    body = client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["model"]["backend"] == "onnx" and body["model"]["provider"] == "CPUExecutionProvider"
    assert client.get("/healthz").status_code == 200


def test_not_ready_while_the_store_is_unreachable(make_client: Callable[..., Any], tmp_path: Path) -> None:
    unreachable = AnnotationStore(f"sqlite:///{tmp_path / 'missing-dir' / 'labels.db'}")
    with make_client() as client:
        client.app.dependency_overrides[get_store] = lambda: unreachable  # type: ignore[attr-defined]
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "store_unavailable"
        client.app.dependency_overrides.clear()  # type: ignore[attr-defined]
        assert client.get("/readyz").status_code == 200
    unreachable.close()


def test_metrics_expose_every_family(client: TestClient, phantom_png: bytes, tiny_bundle: Path) -> None:
    assert client.post("/explain", files={"file": ("m.png", phantom_png, "image/png")}).status_code == 200
    client.get("/units/100000")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(r'deepminer_http_requests_total\{method="POST",route="/explain",status="200"\} [1-9]', text)
    assert 'deepminer_http_requests_total{method="GET",route="/units/{unit_id}",status="404"}' in text
    assert 'deepminer_http_request_duration_seconds_bucket{le="0.5",method="POST",route="/explain"}' in text
    for stage in ("upload", "queue", "decode", "preprocess", "inference", "explain", "annotations", "encode", "total"):
        assert f'deepminer_inference_stage_seconds_count{{stage="{stage}"}}' in text
    assert "deepminer_http_requests_in_flight " in text
    info = re.search(r"deepminer_model_info\{([^}]*)\} 1\.0", text)
    assert info is not None
    labels = dict(re.findall(r'(\w+)="([^"]*)"', info.group(1)))
    assert labels["backend"] == "onnx" and labels["provider"] == "CPUExecutionProvider"
    assert labels["hash"] == client.get("/readyz").json()["model"]["hash"]
    assert labels["model_id"] == client.get("/readyz").json()["model"]["id"]


def test_apps_keep_separate_registries(make_client: Callable[..., Any], client: TestClient) -> None:
    with make_client() as other:
        other.get("/healthz")
        assert 'route="/healthz"' in other.get("/metrics").text
    assert "deepminer_model_info{" in client.get("/metrics").text


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The service's log lines, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def test_request_log_is_json_without_file_names(client: TestClient, phantom_png: bytes, json_log: io.StringIO) -> None:
    name = "DOE_JANE_1961-04-02_MRN12345.png"
    response = client.post(
        "/explain", files={"file": (name, phantom_png, "image/png")}, headers={"X-Request-ID": "r-1"}
    )
    assert response.status_code == 200
    client.post("/explain", files={"file": (name, b"junk", "image/png")}, headers={"X-Request-ID": "r-2"})
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert [(r["request_id"], r["route"], r["status"]) for r in requests] == [
        ("r-1", "/explain", 200),
        ("r-2", "/explain", 415),
    ]
    assert all(r["duration_ms"] >= 0 and r["method"] == "POST" for r in requests)
    assert "DOE" not in json_log.getvalue() and "MRN" not in json_log.getvalue()


def test_dicom_patient_data_never_reaches_the_log(
    client: TestClient, phantom_dicom: bytes, json_log: io.StringIO
) -> None:
    files = {"file": ("DOE_JANE.dcm", phantom_dicom, "application/dicom")}
    assert client.post("/explain", files=files).status_code == 200
    truncated = {"file": ("DOE_JANE.dcm", phantom_dicom[: len(phantom_dicom) // 2], "application/dicom")}
    response = client.post("/explain", files=truncated)
    assert response.status_code == 422
    for text in (json_log.getvalue(), response.text):
        assert "Doe" not in text and "DOE" not in text and "PID-424242" not in text and "19610402" not in text
