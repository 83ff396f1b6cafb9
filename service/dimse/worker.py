"""The worker that explains spooled instances in this process and commits their DICOM results to the outbox.

Each instance goes through :meth:`Explainer.explain <service.explainer.Explainer.explain>`
(the inference step and the DeepMiner method of ``/explain``) and
:func:`~service.pacs.results.build_results` (the SR, Secondary Capture and
presentation state of ``/dicomweb/explain``). Order of the durable steps:

1. results committed to the outbox under the instance's key (the rename);
2. the spooled instance removed.

A crash between them leaves an instance whose key is committed: the next run
drops it unexplained. A crash before 1 leaves it spooled: explained again,
its half-written results discarded. So every acknowledged instance is
explained, and once per bundle.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from annotations import StoreUnavailableError
from service.dimse.metrics import DimseMetrics
from service.dimse.outbox import Outbox, result_key
from service.dimse.spool import Spool
from service.errors import ServiceError
from service.explainer import Explainer
from service.inference import Stopwatch
from service.pacs.equipment import Equipment
from service.pacs.results import build_results
from service.pacs.source import read_header

log = logging.getLogger(__name__)


class SpoolWorker:
    """Explains what the spool holds, oldest first; one instance at a time (the explainer uses every core)."""

    def __init__(
        self,
        *,
        spool: Spool,
        outbox: Outbox,
        explainer: Explainer,
        equipment: Equipment,
        metrics: DimseMetrics,
        retry_s: float,
    ) -> None:
        self.spool = spool
        self.outbox = outbox
        self.explainer = explainer
        self.equipment = equipment
        self.metrics = metrics
        self.retry_s = retry_s
        self._not_before: dict[str, float] = {}  # instances that failed for a passing reason: when to try again

    def run(self, stop: threading.Event, *, poll_s: float) -> None:
        """Work until ``stop`` is set, looking again every ``poll_s`` seconds when nothing is due."""
        while not stop.is_set():
            if self.run_once() == 0:
                stop.wait(poll_s)

    def run_once(self) -> int:
        """Handle every instance that is due; how many were handled (explained, dropped as done, or failed)."""
        handled = 0
        now = time.monotonic()
        for path in self.spool.pending():
            if self._not_before.get(path.name, 0.0) > now:
                continue
            if self.process(path):
                handled += 1
        return handled

    def process(self, path: Path) -> bool:
        """Explain one spooled instance and commit its results; False when it stays spooled for a retry."""
        key = result_key(self.spool.sop_uid(path), self.explainer.bundle.hash)
        if self.outbox.has(key):  # explained before a crash, or received again: never twice
            self.spool.remove(path)
            self.metrics.explained.labels(outcome="duplicate").inc()
            return True
        clock = Stopwatch()
        try:
            data = path.read_bytes()
            header = read_header(data)
            result = self.explainer.explain(data, clock=clock)
            if not result.explanation.labels_available:
                raise StoreUnavailableError("the unit labels cannot be read; the results would lack them")
            results = build_results(result, header, self.equipment)
            clock.lap("dicom")
        except ServiceError as exc:
            if exc.status < 500:  # the instance itself: no retry can explain it
                self.spool.fail(path, code=exc.code, reason=str(exc))
                self.metrics.explained.labels(outcome="failed").inc()
                log.warning(
                    "instance not explainable: %s", exc, extra={"fields": {"event": "dimse_failed", "code": exc.code}}
                )
                return True
            return self._retry(path, exc)
        except (StoreUnavailableError, OSError) as exc:
            return self._retry(path, exc)
        try:
            self.outbox.commit(key, results)
        except OSError as exc:  # the outbox's disk full or failing: the instance stays spooled, nothing is lost
            return self._retry(path, exc)
        self.spool.remove(path)
        self._not_before.pop(path.name, None)
        self.metrics.explained.labels(outcome="explained").inc()
        log.info(
            "instance explained",
            extra={
                "fields": {
                    "event": "dimse_explained",
                    "predicted": result.predicted_class,
                    "timings_ms": {k: round(v, 1) for k, v in clock.timings().items()},
                }
            },
        )
        return True

    def _retry(self, path: Path, exc: Exception) -> bool:
        self._not_before[path.name] = time.monotonic() + self.retry_s
        self.metrics.explained.labels(outcome="retry").inc()
        log.warning(
            "explanation deferred %.0f s: %s",
            self.retry_s,
            exc,
            extra={"fields": {"event": "dimse_retry", "error": type(exc).__name__}},
        )
        return False
