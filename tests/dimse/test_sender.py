"""Results sent back by C-STORE to a real pynetdicom Storage SCP: kept until acknowledged, retried, dead-lettered."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ComprehensiveSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    SecondaryCaptureImageStorage,
)

from service.dimse.metrics import DimseMetrics
from service.dimse.outbox import Outbox, result_key
from service.dimse.sender import Destination, ResultSender
from service.explainer import Explainer
from tests.dimse.conftest import DESTINATION, DestinationScp, encoded, make_worker


def explained_once(root: Path, explainer: Explainer, ds: Dataset) -> tuple[Outbox, str]:
    worker, spool, outbox, _ = make_worker(root, explainer)
    spool.put(str(ds.SOPInstanceUID), encoded(ds))
    assert worker.run_once() == 1
    return outbox, result_key(str(ds.SOPInstanceUID), explainer.bundle.hash)


def sender_for(outbox: Outbox, destination: DestinationScp, *, retries: int) -> ResultSender:
    target = Destination(ae_title=DESTINATION, host="127.0.0.1", port=destination.port, calling_ae_title="DEEPMINER")
    return ResultSender(outbox=outbox, destination=target, metrics=DimseMetrics(), retries=retries, backoff_s=0.05)


def test_results_wait_while_the_destination_is_down_and_are_delivered_once_it_is_back(
    explainer: Explainer, new_instance: Callable[[], Dataset], destination: DestinationScp, tmp_path: Path
) -> None:
    ds = new_instance()
    outbox, key = explained_once(tmp_path, explainer, ds)
    sender = sender_for(outbox, destination, retries=5)
    assert sender.run_once() == 0  # nothing listens yet
    assert outbox.committed() == [key] and len(outbox.files(key)) == 3
    destination.start()
    time.sleep(0.1)  # past the first backoff
    assert sender.run_once() == 1
    assert sorted(str(r.SOPClassUID) for r in destination.received) == sorted(
        [ComprehensiveSRStorage, SecondaryCaptureImageStorage, GrayscaleSoftcopyPresentationStateStorage]
    )
    assert {str(r.StudyInstanceUID) for r in destination.received} == {str(ds.StudyInstanceUID)}
    assert outbox.committed() == [] and (outbox.delivered / key).exists() and outbox.has(key)
    sample = sender.metrics.registry.get_sample_value
    assert sample("deepminer_dimse_results_total", {"outcome": "retried"}) == 1
    assert sample("deepminer_dimse_results_total", {"outcome": "sent"}) == 1
    assert sender.run_once() == 0 and len(destination.received) == 3  # nothing is sent twice


@pytest.mark.parametrize("status, tries", [(0xA900, 1), (0xA700, 3)])
def test_results_the_destination_keeps_refusing_go_to_the_dead_letter_folder_with_the_status(
    explainer: Explainer,
    new_instance: Callable[[], Dataset],
    destination: DestinationScp,
    tmp_path: Path,
    status: int,
    tries: int,
) -> None:
    """A900 (data set does not match its SOP class) is final at once; A700 (out of resources) after the retries."""
    outbox, key = explained_once(tmp_path, explainer, new_instance())
    destination.status = status
    destination.start()
    sender = sender_for(outbox, destination, retries=2)
    deadline = time.monotonic() + 30
    while outbox.committed() and time.monotonic() < deadline:
        sender.run_once()
        time.sleep(0.05)
    assert destination.calls == tries
    reason = json.loads((outbox.dead_letter / key / "reason.json").read_text())
    assert reason["status"] == f"0x{status:04X}" and f"0x{status:04X}" in reason["reason"]
    assert len(list((outbox.dead_letter / key).glob("*.dcm"))) == 3 and outbox.has(key)
