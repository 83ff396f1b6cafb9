"""Micro-batching: concurrent same-shape inputs share one backend call and get the numbers they would alone."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deepminer.bundle import load_bundle
from deepminer.imaging import decode_image, network_input
from service.backends import create_backend
from service.backends.onnx import OnnxBackend
from service.batching import MicroBatcher
from service.settings import Settings


class CountingBackend:
    """The real ONNX backend, recording the batch size of every call it gets."""

    def __init__(self, inner: OnnxBackend) -> None:
        self.inner = inner
        self.name, self.provider, self.precision = inner.name, inner.provider, inner.precision
        self.calls: list[int] = []
        self._lock = threading.Lock()

    def run(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.run(x, aux)

    def run_batch(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            self.calls.append(int(x.shape[0]))
        return self.inner.run_batch(x, aux)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def onnx_backend(tiny_bundle: Path) -> OnnxBackend:
    return OnnxBackend(load_bundle(tiny_bundle), device="cpu", intra_op_threads=1)


@pytest.fixture(scope="module")
def inputs(tiny_bundle: Path, phantom_records: list[Any]) -> list[np.ndarray]:
    """Network inputs of four different phantoms, all of one shape."""
    bundle = load_bundle(tiny_bundle)
    xs = [
        network_input(decode_image(r.image_path.read_bytes()).pixels, short_side=bundle.input_short_side,
                      mean=bundle.mean, std=bundle.std)
        for r in phantom_records[:8]
    ]
    same = [x for x in xs if x.shape == xs[0].shape][:4]
    assert len(same) == 4
    return same


def run_concurrently(backend: Any, xs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    with ThreadPoolExecutor(max_workers=len(xs)) as pool:
        return list(pool.map(backend.run, xs))


def assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    for x, y in zip(a, b):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * float(np.abs(y).max()))


def test_batched_numbers_equal_single_ones(onnx_backend: OnnxBackend, inputs: list[np.ndarray]) -> None:
    counting = CountingBackend(onnx_backend)
    batcher = MicroBatcher(counting, max_size=4, max_wait_s=5.0)  # the 4th arrival closes the batch, not the wait
    batched = run_concurrently(batcher, inputs)
    assert counting.calls == [4]
    for x, got in zip(inputs, batched):
        assert_same(got, onnx_backend.run(x))


def test_a_lone_input_runs_after_the_wait(onnx_backend: OnnxBackend, inputs: list[np.ndarray]) -> None:
    counting = CountingBackend(onnx_backend)
    sizes: list[int] = []
    batcher = MicroBatcher(counting, max_size=8, max_wait_s=0.05, on_batch=sizes.append)
    assert_same(batcher.run(inputs[0]), onnx_backend.run(inputs[0]))
    assert counting.calls == [1] and sizes == [1]


def test_different_shapes_are_never_stacked(onnx_backend: OnnxBackend, inputs: list[np.ndarray]) -> None:
    counting = CountingBackend(onnx_backend)
    batcher = MicroBatcher(counting, max_size=2, max_wait_s=0.5)
    wider = np.pad(inputs[1], ((0, 0), (0, 0), (0, 0), (0, 64)))
    results = run_concurrently(batcher, [inputs[0], wider])
    assert sorted(counting.calls) == [1, 1]
    assert_same(results[0], onnx_backend.run(inputs[0]))
    assert_same(results[1], onnx_backend.run(wider))


def test_a_failing_batch_fails_every_caller(onnx_backend: OnnxBackend, inputs: list[np.ndarray]) -> None:
    class Broken(CountingBackend):
        def run_batch(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
            raise RuntimeError(f"device lost with a batch of {x.shape[0]}")

    batcher = MicroBatcher(Broken(onnx_backend), max_size=2, max_wait_s=5.0)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(batcher.run, x) for x in inputs[:2]]
        for future in futures:
            with pytest.raises(RuntimeError, match="batch of 2"):
                future.result()


def test_settings_turn_it_on(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert isinstance(create_backend(Settings(bundle=tiny_bundle, batch_max_size=4, device="cpu"), bundle), MicroBatcher)
    assert isinstance(create_backend(Settings(bundle=tiny_bundle, device="cpu"), bundle), OnnxBackend)


def test_batched_service_answers_like_the_unbatched_one(
    make_client: Callable[..., Any], phantom_records: list[Any]
) -> None:
    images = [r.image_path.read_bytes() for r in phantom_records[:4]]

    def explain_all(client: Any) -> list[dict[str, Any]]:
        def one(data: bytes) -> dict[str, Any]:
            response = client.post("/explain", files={"file": ("m.png", data, "image/png")}, params={"maps": "json"})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body

        with ThreadPoolExecutor(max_workers=len(images)) as pool:
            return list(pool.map(one, images))

    with make_client(device="cpu", intra_op_threads=1) as client:
        single = explain_all(client)
    with make_client(device="cpu", intra_op_threads=1, inference_workers=4, batch_max_size=4,
                     batch_max_wait_ms=300) as client:
        batched = explain_all(client)
        metrics = client.get("/metrics").text
    for a, b in zip(single, batched):
        assert a["predicted_class"] == b["predicted_class"]
        for c in a["classes"]:
            assert a["scores"][c] == pytest.approx(b["scores"][c], abs=1e-5)
            assert a["classifier_probabilities"][c] == pytest.approx(b["classifier_probabilities"][c], abs=1e-5)
        np.testing.assert_allclose(a["cam"]["values"], b["cam"]["values"], rtol=1e-4, atol=1e-4)
        assert [u["unit_id"] for u in a["units"]] == [u["unit_id"] for u in b["units"]]
    count = re.search(r"^deepminer_inference_batch_size_count (\S+)$", metrics, re.MULTILINE)
    total = re.search(r"^deepminer_inference_batch_size_sum (\S+)$", metrics, re.MULTILINE)
    assert count is not None and total is not None
    # Warm-up ran alone; the 4 requests came in fewer backend calls than 4 (shapes permitting, in one).
    assert float(total.group(1)) == 5.0 and float(count.group(1)) < 5.0
