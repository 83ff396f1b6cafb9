"""Inference runs in a bounded pool with a deadline: a slow explanation gives a 504, the service carries on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np
import pytest

from service.api.deps import get_explainer
from service.errors import InferenceTimeoutError, ServiceBusyError
from service.explainer import Explainer
from service.pool import InferencePool


class SlowBackend:
    """The real backend, delayed: an explanation that outlives the request timeout."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.name = inner.name
        self.provider = inner.provider
        self.precision = inner.precision

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.delay_s)
        return self.inner.run(x)  # type: ignore[no-any-return]

    def close(self) -> None:
        pass


def test_timeout_gives_504_and_the_service_recovers(make_client: Callable[..., Any], phantom_png: bytes) -> None:
    files = {"file": ("m.png", phantom_png, "image/png")}
    with make_client(request_timeout_s=0.5) as client:
        app: Any = client.app
        real: Explainer = app.state.explainer
        slow = Explainer(bundle=real.bundle, backend=SlowBackend(real.backend, 1.2), catalog=real.catalog)
        app.dependency_overrides[get_explainer] = lambda: slow
        started = time.perf_counter()
        response = client.post("/explain", files=files)
        assert time.perf_counter() - started < 1.1  # answered at the deadline, not when the work ended
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "inference_timeout"
        app.dependency_overrides.clear()
        time.sleep(1.0)  # the abandoned job still holds the only worker until its forward pass ends
        assert client.post("/explain", files=files).status_code == 200
        assert client.get("/readyz").status_code == 200


def test_pool_bounds_concurrency_and_signals_cancellation() -> None:
    pool = InferencePool(workers=2, timeout_s=5.0)
    running = 0
    peak = 0
    lock = threading.Lock()

    def job(cancel: threading.Event) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return 1

    async def many() -> int:
        results: list[int] = []

        async def one() -> None:
            results.append(await pool.run(job))

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
        return sum(results)

    assert anyio.run(many) == 6
    assert peak == 2

    seen = threading.Event()
    short = InferencePool(workers=1, timeout_s=0.1)

    def stuck(cancel: threading.Event) -> None:
        cancel.wait(2.0)  # a well-behaved job returns once the caller gave up
        if cancel.is_set():
            seen.set()

    with pytest.raises(InferenceTimeoutError):
        anyio.run(short.run, stuck)
    assert seen.wait(2.0)


def test_full_line_is_refused_with_busy() -> None:
    pool = InferencePool(workers=1, timeout_s=5.0, max_queue=1)

    async def scenario() -> None:
        async with pool.admit(), pool.admit():
            with pytest.raises(ServiceBusyError):
                async with pool.admit():
                    pass
        async with pool.admit():  # places are given back
            pass

    anyio.run(scenario)


def test_busy_service_answers_503_with_retry_after(make_client: Callable[..., Any], phantom_png: bytes) -> None:
    files = {"file": ("m.png", phantom_png, "image/png")}
    with make_client(max_queue=0, inference_workers=1) as client:
        app: Any = client.app
        real: Explainer = app.state.explainer
        slow = Explainer(bundle=real.bundle, backend=SlowBackend(real.backend, 1.5), catalog=real.catalog)
        app.dependency_overrides[get_explainer] = lambda: slow
        first: list[int] = []
        worker = threading.Thread(target=lambda: first.append(client.post("/explain", files=files).status_code))
        worker.start()
        time.sleep(0.5)  # the first request now holds the only place
        gauges = client.get("/metrics").text
        assert "deepminer_inference_in_flight 1.0" in gauges and "deepminer_inference_queue_depth 0.0" in gauges
        started = time.perf_counter()
        response = client.post("/explain", files=files)
        assert time.perf_counter() - started < 0.5  # refused at once, not after the running one
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "busy"
        assert response.headers["retry-after"] == "1"
        worker.join()
        assert first == [200]
        app.dependency_overrides.clear()
        assert client.post("/explain", files=files).status_code == 200
        after = client.get("/metrics").text
        assert 'deepminer_errors_total{code="busy",status="503"} 1.0' in after
        assert "deepminer_inference_in_flight 0.0" in after and "deepminer_inference_queue_depth 0.0" in after


def test_waiting_requests_show_in_the_queue_depth(make_client: Callable[..., Any], phantom_png: bytes) -> None:
    """One running, two waiting, the line (max_queue 2) full: the fourth gets 503 busy at once."""
    files = {"file": ("m.png", phantom_png, "image/png")}
    with make_client(max_queue=2, inference_workers=1) as client:
        app: Any = client.app
        real: Explainer = app.state.explainer
        slow = Explainer(bundle=real.bundle, backend=SlowBackend(real.backend, 0.8), catalog=real.catalog)
        app.dependency_overrides[get_explainer] = lambda: slow
        statuses: list[int] = []
        threads = [
            threading.Thread(target=lambda: statuses.append(client.post("/explain", files=files).status_code))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
            time.sleep(0.15)
        gauges = client.get("/metrics").text
        assert "deepminer_inference_in_flight 1.0" in gauges and "deepminer_inference_queue_depth 2.0" in gauges
        started = time.perf_counter()
        busy = client.post("/explain", files=files)
        assert busy.status_code == 503 and time.perf_counter() - started < 0.5
        for thread in threads:
            thread.join()
        assert statuses == [200, 200, 200]
        app.dependency_overrides.clear()
