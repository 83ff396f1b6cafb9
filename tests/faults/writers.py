"""Label writers that hammer a live server from several threads, and the check of what the store kept.

Each client writes, in turn, one label (``PUT /units/{id}``) and a batch of
three (``POST /units/batch``), every label unique by its text, and records
what it sent and what it was answered. :func:`read_back` then compares the
store, read through ``/units/{id}/history``, with those records.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

UNITS = tuple(range(8))
BATCH_SIZE = 3
DESCRIPTION_PAD = " ".join(["Radiating lines at the edge of a mass."] * 5)

Key = tuple[int, str, str, str]
"""(unit_id, annotator, label, description): one label as sent, and as it must read back."""


@dataclass(frozen=True)
class Attempt:
    """One write as a client made it: the labels sent and the answer (``status`` None: no answer at all)."""

    client: int
    seq: int
    items: tuple[dict[str, Any], ...]
    started: float  # time.monotonic()
    ended: float
    status: int | None
    code: str | None = None
    retry_after: str | None = None
    error: str | None = None  # the transport error when nothing was answered

    @property
    def acknowledged(self) -> bool:
        return self.status == 201

    @property
    def answer(self) -> str:
        """``201``, ``503 store_unavailable``, or ``no answer (ConnectError)``."""
        if self.status is None:
            return f"no answer ({self.error})"
        return f"{self.status} {self.code}" if self.code else str(self.status)

    def keys(self) -> list[Key]:
        return [_key(item) for item in self.items]


def _key(item: dict[str, Any]) -> Key:
    return (int(item["unit_id"]), str(item["annotator"]), str(item["label"]), str(item["description"]))


def _label(client: int, seq: int, index: int) -> dict[str, Any]:
    return {
        "unit_id": UNITS[(client + seq + index) % len(UNITS)],
        "annotator": f"fault-client-{client}",
        "label": f"Fault label c{client} w{seq} i{index}",
        "category": "Mass",
        "cancer_association": "yes",
        "description": f"client {client} write {seq} item {index}: {DESCRIPTION_PAD}",
    }


class LabelWriters:
    """``clients`` threads writing labels to ``base_url`` until :meth:`stop`; ``description_pad`` lengthens each."""

    def __init__(self, base_url: str, *, clients: int = 4, description_pad: str = "", timeout_s: float = 15.0) -> None:
        self.base_url = base_url
        self.clients = clients
        self.description_pad = description_pad
        self.timeout_s = timeout_s
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(c,), daemon=True) for c in range(clients)]

    def __enter__(self) -> LabelWriters:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> list[Attempt]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.snapshot()

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self.attempts)

    def acknowledged(self) -> int:
        with self._lock:
            return sum(1 for a in self.attempts if a.acknowledged)

    def wait_for(self, predicate: Callable[[list[Attempt]], bool], *, timeout_s: float = 60.0) -> None:
        """Wait until ``predicate(self.snapshot())`` holds; AssertionError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.snapshot()):
            assert time.monotonic() < deadline, f"writers: condition not met within {timeout_s} s"
            time.sleep(0.05)

    def _write(self, client: int) -> None:
        seq = 0
        with httpx.Client(base_url=self.base_url, timeout=self.timeout_s) as http:
            while not self._stop.is_set():
                batch = seq % 2 == 1
                items = tuple(
                    {**label, "description": label["description"] + self.description_pad}
                    for label in (_label(client, seq, i) for i in range(BATCH_SIZE if batch else 1))
                )
                attempt = self._send(http, client, seq, items, batch=batch)
                with self._lock:
                    self.attempts.append(attempt)
                if attempt.status is None:
                    time.sleep(0.05)  # the server is gone: do not spin
                seq += 1

    @staticmethod
    def _send(http: httpx.Client, client: int, seq: int, items: tuple[dict[str, Any], ...], *, batch: bool) -> Attempt:
        started = time.monotonic()
        try:
            if batch:
                response = http.post("/units/batch", json={"annotations": list(items)})
            else:
                body = {k: v for k, v in items[0].items() if k != "unit_id"}
                response = http.put(f"/units/{items[0]['unit_id']}", json=body)
        except httpx.TransportError as exc:
            return Attempt(client, seq, items, started, time.monotonic(), None, error=type(exc).__name__)
        code = None
        if response.status_code != 201:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = f"unparsable body {response.text[:80]!r}"
        return Attempt(
            client=client,
            seq=seq,
            items=items,
            started=started,
            ended=time.monotonic(),
            status=response.status_code,
            code=code,
            retry_after=response.headers.get("retry-after"),
        )


@dataclass(frozen=True)
class ReadBack:
    """What the store holds of the labels the writers sent."""

    acknowledged_writes: int
    acknowledged_labels: int
    found_labels: int  # acknowledged labels read back, field for field
    missing: tuple[Key, ...]  # acknowledged, not there: a lost write
    unacknowledged_stored: int  # labels stored although their write got no 201 (the answer was lost)
    partial_batches: tuple[tuple[int, int], ...]  # (client, seq) of batches stored in part
    foreign: tuple[dict[str, Any], ...]  # stored versions of the writers' annotators that match nothing sent
    version_gaps: tuple[str, ...]  # (unit, annotator) whose versions are not 1..n
    answers: dict[str, int] = field(default_factory=dict)

    def assert_nothing_lost(self) -> None:
        """Every acknowledged label is there, field for field; no batch in part; no version nobody sent; an
        annotator's versions of a unit run 1..n."""
        assert self.missing == ()
        assert self.found_labels == self.acknowledged_labels > 0
        assert self.partial_batches == ()
        assert self.foreign == ()
        assert self.version_gaps == ()


def history(base_url: str, units: Iterable[int] = UNITS) -> list[dict[str, Any]]:
    """Every stored version of ``units``, through the API."""
    versions: list[dict[str, Any]] = []
    with httpx.Client(base_url=base_url, timeout=30.0) as http:
        for unit in units:
            response = http.get(f"/units/{unit}/history")
            assert response.status_code == 200, response.text
            versions.extend(response.json()["versions"])
    return versions


def answers(attempts: Sequence[Attempt]) -> dict[str, int]:
    """How many writes got each answer, e.g. ``{"201": 412, "503 store_unavailable": 90}``."""
    return dict(sorted(Counter(a.answer for a in attempts).items()))


def read_back(base_url: str, attempts: Sequence[Attempt]) -> ReadBack:
    """Compare the store (read through ``base_url``) with ``attempts``; see :class:`ReadBack`."""
    stored = [v for v in history(base_url) if str(v["annotator"]).startswith("fault-client-")]
    by_key: dict[Key, dict[str, Any]] = {}
    for version in stored:
        by_key.setdefault(_key(version), version)
    sent = {key: attempt for attempt in attempts for key in attempt.keys()}
    acknowledged = [a for a in attempts if a.acknowledged]
    missing = tuple(key for a in acknowledged for key in a.keys() if key not in by_key)
    foreign = tuple(
        v
        for v in stored
        if _key(v) not in sent or (v["category"], v["cancer_association"]) != ("Mass", "yes")
    )
    partial = tuple(
        (a.client, a.seq) for a in attempts if 0 < sum(key in by_key for key in a.keys()) < len(a.items)
    )
    versions: dict[tuple[int, str], list[int]] = {}
    for version in stored:
        versions.setdefault((version["unit_id"], version["annotator"]), []).append(version["version"])
    gaps = tuple(
        f"unit {unit} {annotator}: versions {sorted(numbers)}"
        for (unit, annotator), numbers in versions.items()
        if sorted(numbers) != list(range(1, len(numbers) + 1))
    )
    labels = sum(len(a.items) for a in acknowledged)
    return ReadBack(
        acknowledged_writes=len(acknowledged),
        acknowledged_labels=labels,
        found_labels=labels - len(missing),
        missing=missing,
        unacknowledged_stored=sum(
            1 for a in attempts if not a.acknowledged for key in a.keys() if key in by_key
        ),
        partial_batches=partial,
        foreign=foreign,
        version_gaps=gaps,
        answers=answers(attempts),
    )
