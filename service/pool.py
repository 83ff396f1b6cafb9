"""A bounded pool for blocking inference, with a deadline, off the event loop."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.to_thread

from service.errors import InferenceTimeoutError, ServiceBusyError

T = TypeVar("T")


class InferencePool:
    """Runs at most ``workers`` jobs at once in threads; each call waits and runs within ``timeout_s``.

    :meth:`admit` bounds the line: at most ``workers + max_queue`` requests
    are admitted at once, so uploads held in memory while waiting are bounded too.

    A job is a callable taking a ``threading.Event`` that is set when its caller
    stops waiting (timeout or cancellation); jobs should check it between
    stages and stop. A thread cannot be killed, so a timed-out job keeps its
    slot until it notices the event: the bound on concurrent work holds even
    then, and requests behind it wait rather than pile more work onto the CPU.

    ``on_change(waiting, running)`` is called whenever either count changes
    (for the queue-depth and in-flight gauges): ``running`` jobs hold a
    worker, ``waiting`` requests are admitted but do not (yet) hold one, be it
    while their upload arrives or while they wait for a worker.
    """

    def __init__(
        self,
        *,
        workers: int,
        timeout_s: float,
        max_queue: int = 16,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.workers = workers
        self.timeout_s = timeout_s
        self.max_queue = max_queue
        self._admitted = 0  # changed on the event loop, read by worker threads: under _count_lock
        self._running = 0  # touched by worker threads, under _count_lock
        self._count_lock = threading.Lock()
        self._on_change = on_change
        self._limiter = anyio.CapacityLimiter(workers)
        # Held by the thread itself, so an abandoned job still counts until it ends.
        self._slots = threading.BoundedSemaphore(workers)

    @property
    def running(self) -> int:
        """Jobs holding a worker now (an abandoned job counts until it ends)."""
        return self._running

    @property
    def waiting(self) -> int:
        """Admitted requests that do not hold a worker."""
        return max(0, self._admitted - self._running)

    def _changed(self, admitted: int = 0, running: int = 0) -> None:
        with self._count_lock:
            self._admitted += admitted
            self._running += running
            snapshot = (max(0, self._admitted - self._running), self._running)
            if self._on_change is not None:
                self._on_change(*snapshot)

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold a place in line for one request, or raise :class:`ServiceBusyError` when the line is full."""
        if self._admitted >= self.workers + self.max_queue:
            raise ServiceBusyError(
                f"all {self.workers} inference workers are busy and {self.max_queue} requests are waiting; retry shortly"
            )
        self._changed(admitted=1)
        try:
            yield
        finally:
            self._changed(admitted=-1)

    async def run(self, job: Callable[[threading.Event], T]) -> T:
        """``job(cancel)`` in a worker thread; :class:`InferenceTimeoutError` after ``timeout_s``."""
        cancel = threading.Event()

        def in_thread() -> T:
            with self._slots:
                if cancel.is_set():
                    raise InferenceTimeoutError("explanation abandoned before it started")
                self._changed(running=1)
                try:
                    return job(cancel)
                finally:
                    self._changed(running=-1)

        try:
            with anyio.fail_after(self.timeout_s):
                return await anyio.to_thread.run_sync(in_thread, limiter=self._limiter, abandon_on_cancel=True)
        except TimeoutError:
            raise InferenceTimeoutError(
                f"the explanation did not finish within {self.timeout_s:g} s (request_timeout_s); "
                "the service is busy or the image is very large, retry later"
            ) from None
        finally:
            cancel.set()
