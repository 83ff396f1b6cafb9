"""Micro-batching: same-shape inputs from concurrent explanations share one backend call.

A GPU runs a batch of N images in much less than N times the time of one, but
a CPU gains little, so this is off by default (``batch_max_size = 1``). With
it on, the first worker thread to reach the backend with an input of some
shape opens a batch and waits up to ``max_wait_s`` for others of that shape;
the batch runs when it is full or the wait ends, and each caller gets its own
slice of the outputs. Whole mammograms come in few shapes (the short side is
fixed; the long side follows the detector's aspect ratio), so batches fill.

Only explanations running at the same time can meet: the inference pool must
have at least ``batch_max_size`` workers. A lone request pays ``max_wait_s``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.backends.base import Backend, check_input


@dataclass
class _Batch:
    inputs: list[np.ndarray] = field(default_factory=list)
    aux: list[np.ndarray] = field(default_factory=list)  # (1, J) per input, for models with auxiliary features
    full: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    outputs: tuple[np.ndarray, np.ndarray] | None = None
    error: BaseException | None = None


class MicroBatcher:
    """A :class:`~service.backends.base.Backend` that stacks concurrent same-shape ``run`` calls into ``run_batch``.

    ``on_batch(n)`` is called with the size of every batch run (for metrics).
    """

    def __init__(
        self,
        inner: Backend,
        *,
        max_size: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.inner = inner
        self.name = inner.name
        self.provider = inner.provider
        self.precision = inner.precision
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._open: dict[tuple[tuple[int, ...], tuple[int, ...] | None], _Batch] = {}

    def run(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Forward one image, batched with whatever same-shape images arrive within ``max_wait_s``.

        ``aux`` (auxiliary features, ``(1, J)``) travels with its image; the shape is part of the batch key.
        """
        x = check_input(x)
        key = (tuple(x.shape), None if aux is None else tuple(aux.shape))
        with self._lock:
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch()
            index = len(batch.inputs)
            batch.inputs.append(x)
            if aux is not None:
                batch.aux.append(aux)
            if len(batch.inputs) >= self.max_size:
                del self._open[key]  # closed: later arrivals open a new batch
                batch.full.set()
        if leader:
            batch.full.wait(self.max_wait_s)
            with self._lock:
                if self._open.get(key) is batch:
                    del self._open[key]
            self._execute(batch)
        else:
            batch.done.wait()
        if batch.error is not None:
            raise batch.error
        assert batch.outputs is not None
        logits, features = batch.outputs
        return logits[index], features[index]

    def run_batch(self, x: np.ndarray, aux: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Already a batch: straight to the inner backend."""
        return self.inner.run_batch(x, aux)

    def _execute(self, batch: _Batch) -> None:
        try:
            stacked = batch.inputs[0] if len(batch.inputs) == 1 else np.concatenate(batch.inputs, axis=0)
            aux = np.concatenate(batch.aux, axis=0) if batch.aux else None
            batch.outputs = self.inner.run_batch(stacked, aux)
        except BaseException as exc:  # noqa: BLE001  (handed to every caller of the batch, which re-raises it)
            batch.error = exc
        finally:
            batch.done.set()
        if self._on_batch is not None:
            self._on_batch(len(batch.inputs))

    def close(self) -> None:
        self.inner.close()
