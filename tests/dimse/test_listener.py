"""``python -m service.dimse`` as a process: SIGKILLed right after acknowledging, it loses and repeats nothing."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable

import pytest
from pydicom.dataset import Dataset
from pynetdicom.sop_class import ComprehensiveSRStorage  # type: ignore[attr-defined]

from service.dimse.outbox import JOURNAL
from service.dimse.scp import SUCCESS
from tests.dimse.conftest import DestinationScp, ListenerProcess, associate
from tests.pacs.conftest import ACCESSION, PATIENT_BIRTH_DATE, PATIENT_ID, PATIENT_NAME

BATCH = 6


def journalled(listener: ListenerProcess) -> list[str]:
    """The keys of the outbox journal in commit order (read only: the listener owns the spool)."""
    journal = listener.spool_dir / "outbox" / JOURNAL
    lines = journal.read_text().splitlines() if journal.exists() else []
    return [json.loads(line)["key"] for line in lines]


def delivered(listener: ListenerProcess) -> list[str]:
    return sorted(p.name for p in (listener.spool_dir / "delivered").iterdir())


def wait_until_delivered(listener: ListenerProcess, count: int, *, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(delivered(listener)) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"{len(journalled(listener))} of {count} explained and {len(delivered(listener))} delivered in {timeout_s} s"
    )


@pytest.mark.slow
def test_sigkill_after_acknowledging_then_restart_explains_and_delivers_every_instance_once(
    listener: ListenerProcess, destination: DestinationScp, new_instance: Callable[[], Dataset]
) -> None:
    destination.start()
    listener.start()
    batch = [new_instance() for _ in range(BATCH)]
    with associate(listener.port) as assoc:
        statuses = [assoc.send_c_store(ds).Status for ds in batch]
    listener.kill()  # at once: no shutdown, no flush, the worker and the sender wherever they were
    assert statuses == [SUCCESS] * BATCH
    left = len(list((listener.spool_dir / "incoming").glob("*.dcm")))
    print(f"acknowledged {BATCH}, explained before the kill {BATCH - left}, spooled at the kill {left}")

    listener.start()
    wait_until_delivered(listener, BATCH)
    keys = journalled(listener)
    assert len(keys) == len(set(keys)) == BATCH, keys  # one commit per instance: none explained twice
    uids = {str(ds.SOPInstanceUID) for ds in batch}
    assert {key.rsplit("_", 1)[0] for key in keys} == uids and sorted(keys) == delivered(listener)
    assert not list((listener.spool_dir / "incoming").glob("*.dcm"))
    assert not [p for p in (listener.spool_dir / "outbox").iterdir() if p.is_dir()]

    # Every study got its SR, Secondary Capture and presentation state; a result acknowledged in the instant before
    # the kill may come a second time under its own SOP Instance UID, which a PACS stores once.
    reports = [r for r in destination.received if r.SOPClassUID == ComprehensiveSRStorage]
    assert {str(r.StudyInstanceUID) for r in reports} == {str(ds.StudyInstanceUID) for ds in batch}
    distinct = {str(r.SOPInstanceUID) for r in destination.received}
    assert len(distinct) == 3 * BATCH
    resent = sum(n - 1 for n in Counter(str(r.SOPInstanceUID) for r in destination.received).values())
    print(f"results delivered {len(distinct)}, sent again after the kill {resent}")
    assert resent <= 1

    # The logs of both runs name no patient and no instance.
    logs = "".join(log.read_text() for log in listener.logs)
    assert listener.events("dimse_explained") and listener.events("dimse_association")
    for secret in (PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE, ACCESSION, *uids):
        assert secret not in logs

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{listener.metrics_port}/metrics", timeout=10).read().decode()
    assert "deepminer_dimse_spool_depth 0.0" in metrics and "deepminer_dimse_outbox_depth 0.0" in metrics
    assert "deepminer_dimse_dead_letter_depth 0.0" in metrics
    assert listener.stop() == 0
