"""Operations metrics: stage latencies, pool gauges, errors by code, promtool, and several worker processes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from annotations import AnnotationStore

REPO = Path(__file__).resolve().parents[2]


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name{labels}`` on a Prometheus page (labels in any order), or None."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")) == labels:
            return float(match.group(2))
    return None


def test_errors_are_counted_by_code(client: TestClient, phantom_png: bytes) -> None:
    before = client.get("/metrics").text
    client.post("/explain", files={"file": ("m.png", b"plain text, not an image", "text/plain")})
    client.post("/explain", files={"file": ("m.png", phantom_png, "image/png")}, params={"top_k": 0})
    client.get("/no-such-route")
    after = client.get("/metrics").text
    for code, status in (("unsupported_media_type", "415"), ("validation_error", "422"), ("not_found", "404")):
        was = sample(before, "deepminer_errors_total", code=code, status=status) or 0.0
        assert sample(after, "deepminer_errors_total", code=code, status=status) == was + 1, code


def test_stage_histograms_and_model_info(client: TestClient, phantom_png: bytes) -> None:
    assert client.post("/explain", files={"file": ("m.png", phantom_png, "image/png")}).status_code == 200
    page = client.get("/metrics").text
    for stage in ("decode", "preprocess", "inference", "explain", "encode"):
        assert (sample(page, "deepminer_inference_stage_seconds_count", stage=stage) or 0) >= 1, stage
    for gauge in ("deepminer_inference_queue_depth", "deepminer_inference_in_flight"):
        assert sample(page, gauge) == 0.0
    ready = client.get("/readyz").json()["model"]
    assert ready["device"] == "cpu" and ready["provider"] == "CPUExecutionProvider" and ready["precision"] == "fp32"
    info = sample(page, "deepminer_model_info", model_id=ready["id"], hash=ready["hash"], backend="onnx",
                  provider="CPUExecutionProvider", device="cpu", precision="fp32")
    assert info == 1.0


def test_metric_names_pass_promtool(client: TestClient, phantom_png: bytes, promtool: str) -> None:
    client.post("/explain", files={"file": ("m.png", phantom_png, "image/png")}, params={"overlays": "png"})
    client.post("/explain", files={"file": ("m.png", b"junk", "image/png")})
    page = client.get("/metrics").text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- several worker processes ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_workers(tiny_bundle: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``python -m service`` with DEEPMINER_WORKERS=2 and PROMETHEUS_MULTIPROC_DIR; yields (base URL, that dir)."""
    prom = tmp_path / "prometheus"
    prom.mkdir()
    database = f"sqlite:///{tmp_path / 'labels.db'}"
    # Created up front: two processes creating SQLite tables at once would lock each other out.
    store = AnnotationStore(database)
    store.init_schema()
    store.close()
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEEPMINER_")},
        "DEEPMINER_WORKERS": "2",
        "DEEPMINER_PORT": str(port),
        "DEEPMINER_BUNDLE": str(tiny_bundle),
        "DEEPMINER_DATABASE_URL": database,
        "DEEPMINER_DEVICE": "cpu",
        "DEEPMINER_INTRA_OP_THREADS": "1",
        "DEEPMINER_SEED_AUTOMATIC_LABELS": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "service"], cwd=tmp_path, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        # Each worker publishes its gauges when its app is built; both model-info files mean both started.
        while len(list(prom.glob("gauge_livemax_*.db"))) < 2 or not _ready(base):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"two workers did not start:\n{log.read_text()[-4000:]}")
            time.sleep(0.3)
        yield base, prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def test_two_worker_processes_add_up(two_workers: tuple[str, Path], promtool: str) -> None:
    """Requests spread over two processes; any one /metrics answer counts all of them (multiprocess mode)."""
    base, prom = two_workers

    def hit(_: int) -> int:
        with httpx.Client() as fresh:  # a new connection each time, so either process may accept it
            return fresh.get(f"{base}/healthz", timeout=10.0).status_code

    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while sent < 400:
            assert set(pool.map(hit, range(40))) == {200}
            sent += 40
            if len({p.stem.rsplit("_", 1)[1] for p in prom.glob("counter_*.db")}) == 2:
                break
    pids = {p.stem.rsplit("_", 1)[1] for p in prom.glob("counter_*.db")}
    assert len(pids) == 2, f"all {sent} requests went to one process"
    deadline = time.monotonic() + 10
    while True:  # a request is counted just after its response is sent
        page = httpx.get(f"{base}/metrics", timeout=10.0).text
        counted = sample(page, "deepminer_http_requests_total", method="GET", route="/healthz", status="200")
        if counted == sent or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counted == sent
    assert sample(page, "deepminer_model_info", **_model_labels(page)) == 1.0  # one series, not one per process
    result = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _model_labels(page: str) -> dict[str, str]:
    lines = [line for line in page.splitlines() if line.startswith("deepminer_model_info{")]
    assert len(lines) == 1, lines
    return dict(re.findall(r'(\w+)="([^"]*)"', lines[0]))


# -- the engine actually used ---------------------------------------------------


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_onnx_reports_the_provider_the_session_runs_on(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA listed as available but unusable: ONNX Runtime falls back to CPU, and the service says so (or refuses)."""
    import onnxruntime as ort

    from deepminer.bundle import load_bundle
    from service.backends.onnx import CPU, CUDA, OnnxBackend
    from service.errors import BackendUnavailableError
    from service.explainer import ModelInfo

    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime really has CUDA; the fallback cannot be provoked")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    bundle = load_bundle(tiny_bundle)
    backend = OnnxBackend(bundle, device="auto")  # asks for CUDA first, gets a CPU session
    assert backend.provider == CPU
    info = ModelInfo(
        id="m", hash="h", architecture="resnet18", layer="layer4", backend="onnx", provider=backend.provider,
        precision="fp32",
    )
    assert info.device == "cpu"
    with pytest.raises(BackendUnavailableError, match="fell back to CPUExecutionProvider"):
        OnnxBackend(bundle, device="cuda")
    for backend_name, provider in (("onnx", CUDA), ("torch", "cuda:0")):
        model = ModelInfo(id="m", hash="h", architecture="a", layer="l", backend=backend_name, provider=provider,
                          precision="fp16")
        assert model.device == "cuda"
