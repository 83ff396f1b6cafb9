"""The listener's probes, served beside ``/metrics``: ``/healthz`` (liveness) and ``/readyz`` (readiness).

Liveness is whether the threads that do the work are running: the Storage SCP's
acceptor, the spool worker and, with a destination, the result sender. One of
them dead while the process lives (the sender stopped by an unexpected fault,
say) leaves a listener that acknowledges images and never explains or returns
them; a restart is the cure, so ``/healthz`` answers 503 naming the thread.

Readiness is whether the listener should be sent images: the spool directory
is writable (a test file is written and removed) and the spool is below
:data:`FULL_FRACTION` of its size limit. Either failing answers 503 and names
the problem, so the Service stops routing associations to this listener until
the worker has drained its spool or the disk is back.

The destination's health is reported (the JSON's ``destination``, the gauge
``deepminer_dimse_destination_up``) but does not make the listener unready:
while the destination is away the listener still receives, spools and explains
safely, and its results wait in the outbox to be retried. Unready would turn a
fault on the way back into a refusal of every new image, and with one replica
take the listener's only endpoint out of the Service. The destination is
checked by an association with the results' SOP classes (and C-ECHO when the
destination accepts Verification), at most once every ``max_age_s`` seconds,
so probes and scrapes stay cheap.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from service.dimse.durable import PART_SUFFIX
from service.dimse.outbox import Outbox
from service.dimse.sender import RESULT_SOP_CLASSES, Destination
from service.dimse.spool import Spool

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

FULL_FRACTION = 0.95
"""The spool counts as full (unready) from this share of ``max_spool_bytes`` on: the next mammogram, tens of MB,
would likely be answered A700, so the Service had better send it to another listener or let the sender retry."""

ECHO_TIMEOUT_S = 3.0
"""Longest the destination check waits for the association and the C-ECHO; below the probes' 5 s timeout."""

DESTINATION_MAX_AGE_S = 30.0
"""How long one destination check is reused before the next probe or scrape checks again."""


@dataclass(frozen=True)
class Probe:
    """A probe's answer: 200 when ``ok``, else 503; ``body`` is the JSON."""

    ok: bool
    body: dict[str, object]


@dataclass(frozen=True)
class DestinationState:
    """The last destination check: whether it accepted the association (and C-ECHO), why not, and when."""

    up: bool
    reason: str
    checked_at: float


class DestinationCheck:
    """Associates with the destination as the sender does, with a short timeout, and keeps the answer a while."""

    def __init__(
        self,
        destination: Destination,
        *,
        timeout_s: float = ECHO_TIMEOUT_S,
        max_age_s: float = DESTINATION_MAX_AGE_S,
    ) -> None:
        self.destination = destination
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._state: DestinationState | None = None

    def state(self) -> DestinationState:
        """The cached check, or a new one when it is older than ``max_age_s``; one check at a time."""
        with self._lock:
            if self._state is None or time.monotonic() - self._state.checked_at >= self.max_age_s:
                up, reason = self._check()
                self._state = DestinationState(up=up, reason=reason, checked_at=time.monotonic())
            return self._state

    def _check(self) -> tuple[bool, str]:
        destination = self.destination
        ae = AE(ae_title=destination.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        ae.add_requested_context(Verification)
        for sop_class in RESULT_SOP_CLASSES:
            ae.add_requested_context(sop_class)
        where = f"{destination.ae_title} at {destination.host}:{destination.port}"
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        if not assoc.is_established:
            kind = "rejected the association" if assoc.is_rejected else "is unreachable or aborted the association"
            return False, f"{where} {kind}"
        try:
            accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
            refused = [sop_class.name for sop_class in RESULT_SOP_CLASSES if str(sop_class) not in accepted]
            if refused:
                return False, f"{where} refuses {', '.join(refused)}"
            if str(Verification) in accepted:
                answer = assoc.send_c_echo()
                status = int(answer.Status) if "Status" in answer else None
                if status != 0x0000:
                    shown = "no answer" if status is None else f"0x{status:04X}"
                    return False, f"{where} answered C-ECHO with {shown}"
                return True, f"{where} accepts the results and answers C-ECHO"
            return True, f"{where} accepts the results (no Verification offered)"
        finally:
            if assoc.is_established:
                assoc.release()


class ListenerHealth:
    """What ``/healthz`` and ``/readyz`` answer, read from the listener's own spool, outbox and threads."""

    def __init__(
        self,
        *,
        spool: Spool,
        outbox: Outbox,
        threads: Mapping[str, threading.Thread],
        destination: DestinationCheck | None,
    ) -> None:
        self.spool = spool
        self.outbox = outbox
        self.threads = threads
        self.destination = destination

    def liveness(self) -> Probe:
        """Alive while every working thread runs; else the stopped ones are named."""
        alive = {name: thread.is_alive() for name, thread in self.threads.items()}
        problems = [
            {"code": "thread_stopped", "message": f"the {name} thread has stopped"}
            for name, running in alive.items()
            if not running
        ]
        body: dict[str, object] = {"status": "alive" if not problems else "dead", "threads": alive}
        if problems:
            body["problems"] = problems
        return Probe(ok=not problems, body=body)

    def readiness(self) -> Probe:
        """Ready while the spool is writable and below :data:`FULL_FRACTION` of its limit; the rest is reported."""
        spool = self.spool
        size, limit = spool.bytes, spool.max_bytes
        full_at = int(limit * FULL_FRACTION)
        write_error = _write_error(spool)
        problems = []
        if size >= full_at:
            problems.append(
                {
                    "code": "spool_full",
                    "message": f"the spool holds {size} bytes waiting to be explained; unready from {full_at} "
                    f"({FULL_FRACTION:.0%} of its limit of {limit})",
                }
            )
        if write_error is not None:
            problems.append({"code": "spool_not_writable", "message": f"the spool cannot be written: {write_error}"})
        disk = os.statvfs(spool.incoming)
        body: dict[str, object] = {
            "status": "ready" if not problems else "unready",
            "spool": {
                "depth": spool.depth(),
                "bytes": size,
                "max_bytes": limit,
                "full_at_bytes": full_at,
                "writable": write_error is None,
                "disk_free_bytes": disk.f_bavail * disk.f_frsize,
            },
            "outbox": {"depth": len(self.outbox.committed())},
            "dead_letter": {"depth": _count(self.outbox.dead_letter.iterdir())},
            "destination": self._destination(),
        }
        if problems:
            body["problems"] = problems
        return Probe(ok=not problems, body=body)

    def _destination(self) -> dict[str, object] | None:
        if self.destination is None:
            return None
        state = self.destination.state()
        where = self.destination.destination
        return {
            "ae_title": where.ae_title,
            "host": where.host,
            "port": where.port,
            "up": state.up,
            "reason": state.reason,
            "checked_s_ago": round(time.monotonic() - state.checked_at, 1),
        }


def _write_error(spool: Spool) -> str | None:
    """None when a byte can be written to a new file in ``incoming/`` (and removed); else why not.

    The file's name ends in the suffix of unfinished writes, so one left by a crash is removed on start-up
    and the worker, which takes ``*.dcm`` only, never sees it.
    """
    path = spool.incoming / f".readyz-{uuid.uuid4().hex}{PART_SUFFIX}"
    try:
        with path.open("wb") as probe:
            probe.write(b"\0")
        path.unlink()
    except OSError as exc:
        path.unlink(missing_ok=True)
        return exc.strerror or str(exc)
    return None


def _count(entries: Iterable[object]) -> int:
    return sum(1 for _ in entries)


def probe_app(health: ListenerHealth, metrics: WSGIApplication) -> WSGIApplication:
    """A WSGI app answering ``/healthz`` and ``/readyz`` with JSON and everything else with ``metrics``."""
    probes: dict[str, Callable[[], Probe]] = {"/healthz": health.liveness, "/readyz": health.readiness}

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            refused: dict[str, object] = {
                "problems": [{"code": "method_not_allowed", "message": "the probes answer GET only"}]
            }
            return _json(start_response, "405 Method Not Allowed", refused)
        answer = probe()
        return _json(start_response, "200 OK" if answer.ok else "503 Service Unavailable", answer.body)

    return app


def _json(start_response: StartResponse, status: str, body: dict[str, object]) -> list[bytes]:
    data = json.dumps(body).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Cache-Control", "no-store")]
    start_response(status, headers)
    return [data]
