"""Results out: the outbox's SR, Secondary Capture and presentation state sent by C-STORE to the destination.

Each result file stays in the outbox until the destination answers it with a
success or warning status, so a crash or an unreachable destination loses
nothing; a result acknowledged just before a crash may be sent once more, under
the same SOP Instance UID, which a PACS stores once. A key is tried again after
``backoff_s``, doubling up to ``max_backoff_s``; after ``retries`` failed tries,
or at once on a status that no retry changes (the destination refusing the SOP
class or the data set), it moves to ``dead-letter/`` with the status and reason.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComprehensiveSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    SecondaryCaptureImageStorage,
)

from service.dimse.metrics import DimseMetrics
from service.dimse.outbox import Outbox

log = logging.getLogger(__name__)

RESULT_SOP_CLASSES = (ComprehensiveSRStorage, SecondaryCaptureImageStorage, GrayscaleSoftcopyPresentationStateStorage)
"""What the destination must accept: the SOP classes of :func:`~service.pacs.results.build_results`."""

# C-STORE success and warnings (PS3.4 B.2.3, PS3.7 C): the destination holds the instance. Of the failures,
# out of resources (A7xx) and processing failure (0110) may pass; the others (refused SOP class, a data set it
# cannot understand or that does not match its class) stay as they are however often the result is sent.
_ACKNOWLEDGED = frozenset({0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class Destination:
    """Where results go: the destination's AE title, host and port, and this listener's AE title as the caller."""

    ae_title: str
    host: str
    port: int
    calling_ae_title: str
    timeout_s: float = 30.0


class DeliveryError(Exception):
    """A try failed; ``final`` when retrying cannot help. ``status`` is the DICOM status, or a word for no status."""

    def __init__(self, reason: str, *, status: str, final: bool) -> None:
        super().__init__(reason)
        self.status = status
        self.final = final


class ResultSender:
    """Sends what the outbox holds, oldest key first, in one association per key."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        destination: Destination,
        metrics: DimseMetrics,
        retries: int,
        backoff_s: float,
        max_backoff_s: float = 300.0,
    ) -> None:
        self.outbox = outbox
        self.destination = destination
        self.metrics = metrics
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._failures: dict[str, int] = {}
        self._not_before: dict[str, float] = {}

    def run(self, stop: threading.Event, *, poll_s: float) -> None:
        """Send until ``stop`` is set, looking again every ``poll_s`` seconds when nothing is due."""
        while not stop.is_set():
            if self.run_once() == 0:
                stop.wait(poll_s)

    def run_once(self) -> int:
        """Try every key that is due; how many were delivered or dead-lettered."""
        done = 0
        now = time.monotonic()
        for key in self.outbox.committed():
            if self._not_before.get(key, 0.0) <= now and self.deliver(key):
                done += 1
        return done

    def deliver(self, key: str) -> bool:
        """Send the results of ``key`` still unacknowledged; False when they wait for a retry."""
        try:
            for path in self.outbox.files(key):
                self._send(path)
                self.outbox.acknowledged(path)
        except DeliveryError as exc:
            failures = self._failures.get(key, 0) + 1
            if exc.final or failures > self.retries:
                self.outbox.move_to_dead_letter(key, status=exc.status, reason=str(exc))
                self._forget(key)
                self.metrics.results.labels(outcome="dead_lettered").inc()
                log.error(
                    "results dead-lettered after %d tries: %s",
                    failures,
                    exc,
                    extra={"fields": {"event": "dimse_dead_letter", "status": exc.status}},
                )
                return True
            self._failures[key] = failures
            wait = min(self.backoff_s * 2 ** (failures - 1), self.max_backoff_s)
            self._not_before[key] = time.monotonic() + wait
            self.metrics.results.labels(outcome="retried").inc()
            log.warning(
                "results not delivered, retry in %.1f s: %s",
                wait,
                exc,
                extra={"fields": {"event": "dimse_send_retry", "status": exc.status, "try": failures}},
            )
            return False
        self.outbox.mark_delivered(key)
        self._forget(key)
        self.metrics.results.labels(outcome="sent").inc()
        return True

    def _forget(self, key: str) -> None:
        self._failures.pop(key, None)
        self._not_before.pop(key, None)

    def _send(self, path: Path) -> None:
        dataset = pydicom.dcmread(path)
        destination = self.destination
        ae = AE(ae_title=destination.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout_s
        ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        if not assoc.is_established:
            kind = "rejected" if assoc.is_rejected else "unreachable or aborted"
            raise DeliveryError(
                f"association to {destination.ae_title} at {destination.host}:{destination.port} {kind}",
                status="no_association",
                final=False,
            )
        try:
            answer = _store(assoc, dataset)
        finally:
            if assoc.is_established:
                assoc.release()
        if answer is None:
            raise DeliveryError("the destination sent no C-STORE answer", status="no_answer", final=False)
        if answer not in _ACKNOWLEDGED:
            raise DeliveryError(
                f"the destination answered C-STORE with 0x{answer:04X}",
                status=f"0x{answer:04X}",
                final=not (answer & 0xFF00 == 0xA700 or answer == 0x0110),
            )


def _store(assoc: object, dataset: Dataset) -> int | None:
    """The status of C-STORE of ``dataset`` on ``assoc``; None when no answer came (timeout, abort)."""
    try:
        status = assoc.send_c_store(dataset)  # type: ignore[attr-defined]
    except (RuntimeError, ValueError) as exc:  # the association was lost, or no context accepted the data set
        raise DeliveryError(str(exc), status="no_context", final=isinstance(exc, ValueError)) from exc
    return int(status.Status) if "Status" in status else None
