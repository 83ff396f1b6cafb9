"""``python -m service.dimse`` as a process: killed with SIGKILL right after acknowledging, it loses and repeats nothing."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

import pydicom
import pytest
from pydicom.dataset import Dataset

from service.dimse.outbox import JOURNAL
from service.dimse.scp import SUCCESS
from tests.dimse.conftest import ListenerProcess, associate

BATCH = 6


def committed(listener: ListenerProcess) -> tuple[list[str], list[str]]:
    """The outbox's result directories, and the keys of its journal in commit order (read only)."""
    outbox = listener.spool_dir / "outbox"
    directories = sorted(p.name for p in outbox.iterdir() if p.is_dir() and not p.name.startswith("."))
    journal = outbox / JOURNAL
    lines = journal.read_text().splitlines() if journal.exists() else []
    return directories, [json.loads(line)["key"] for line in lines]


def wait_until_explained(listener: ListenerProcess, count: int, *, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        directories, _ = committed(listener)
        if len(directories) >= count and not list((listener.spool_dir / "incoming").glob("*.dcm")):
            return
        time.sleep(0.2)
    raise AssertionError(f"{len(committed(listener)[0])} of {count} explained within {timeout_s} s")


@pytest.mark.slow
def test_sigkill_after_acknowledging_then_restart_explains_every_instance_exactly_once(
    listener: ListenerProcess, new_instance: Callable[[], Dataset]
) -> None:
    listener.start()
    batch = [new_instance() for _ in range(BATCH)]
    with associate(listener.port) as assoc:
        statuses = [assoc.send_c_store(ds).Status for ds in batch]
    listener.kill()  # at once: no shutdown, no flush, the worker wherever it was
    assert statuses == [SUCCESS] * BATCH
    left = len(list((listener.spool_dir / "incoming").glob("*.dcm")))
    print(f"acknowledged {BATCH}, explained before the kill {BATCH - left}, spooled at the kill {left}")

    listener.start()
    wait_until_explained(listener, BATCH)
    uids = {str(ds.SOPInstanceUID) for ds in batch}
    directories, keys = committed(listener)
    assert len(keys) == len(set(keys)) == BATCH, keys  # one commit per instance: none explained twice
    assert {key.rsplit("_", 1)[0] for key in keys} == uids and sorted(keys) == directories
    for key, ds in zip(sorted(keys), sorted(batch, key=lambda d: str(d.SOPInstanceUID))):
        sr = pydicom.dcmread(listener.spool_dir / "outbox" / key / "sr.dcm")
        assert str(sr.StudyInstanceUID) == str(ds.StudyInstanceUID)

    # Both runs together logged one explanation per instance; none after the restart repeated one before it.
    assert len(listener.events("dimse_explained")) <= BATCH
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{listener.metrics_port}/metrics", timeout=10).read().decode()
    assert "deepminer_dimse_spool_depth 0.0" in metrics
    assert listener.stop() == 0
