"""The spool worker with the tiny bundle: results committed once per instance and bundle, failures set aside."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from service.dimse.durable import PART_SUFFIX
from service.dimse.outbox import result_key
from service.dimse.spool import Spool
from service.explainer import Explainer
from tests.dimse.conftest import encoded, make_worker


def test_each_instance_is_explained_once_into_dicom_results_of_its_study(
    explainer: Explainer, new_instance: Callable[[], Dataset], tmp_path: Path
) -> None:
    worker, spool, outbox, metrics = make_worker(tmp_path, explainer)
    instances = [new_instance(), new_instance()]
    for ds in instances:
        spool.put(str(ds.SOPInstanceUID), encoded(ds))
    assert worker.run_once() == 2
    keys = [result_key(str(ds.SOPInstanceUID), explainer.bundle.hash) for ds in instances]
    assert outbox.committed() == sorted(keys) and outbox.journalled() == keys
    assert spool.depth() == 0 and spool.bytes == 0
    for ds, key in zip(instances, keys):
        results = {p.name: pydicom.dcmread(p) for p in (outbox.dir / key).iterdir()}
        assert sorted(results) == ["presentation_state.dcm", "secondary_capture.dcm", "sr.dcm"]
        assert {str(r.StudyInstanceUID) for r in results.values()} == {str(ds.StudyInstanceUID)}
        assert {str(r.PatientID) for r in results.values()} == {str(ds.PatientID)}
    # The same instance again (a resend, or a restart that found it spooled): dropped, never explained twice.
    spool.put(str(instances[0].SOPInstanceUID), encoded(instances[0]))
    assert worker.run_once() == 1
    assert outbox.journalled() == keys and spool.depth() == 0
    sample = metrics.registry.get_sample_value
    assert sample("deepminer_dimse_instances_explained_total", {"outcome": "explained"}) == 2
    assert sample("deepminer_dimse_instances_explained_total", {"outcome": "duplicate"}) == 1


def test_an_instance_that_cannot_be_explained_goes_to_failed_with_its_reason(
    explainer: Explainer, new_instance: Callable[[], Dataset], tmp_path: Path
) -> None:
    worker, spool, outbox, metrics = make_worker(tmp_path, explainer)
    ds = new_instance()
    uid = str(ds.SOPInstanceUID)
    spool.put(uid, encoded(ds)[:-5000])  # cut inside its pixel data, as a broken sender might
    assert worker.run_once() == 1
    assert outbox.committed() == [] and spool.depth() == 0
    assert (spool.failed / f"{uid}.dcm").exists()
    reason = json.loads((spool.failed / f"{uid}.json").read_text())
    assert reason["code"] == "corrupt_image" and "truncated" in reason["reason"]
    assert metrics.registry.get_sample_value("deepminer_dimse_instances_explained_total", {"outcome": "failed"}) == 1


def test_results_a_crash_left_half_written_are_discarded_and_the_instance_explained(
    explainer: Explainer, new_instance: Callable[[], Dataset], tmp_path: Path
) -> None:
    ds = new_instance()
    uid = str(ds.SOPInstanceUID)
    key = result_key(uid, explainer.bundle.hash)
    Spool(tmp_path, max_bytes=1 << 30).put(uid, encoded(ds))
    half = tmp_path / "outbox" / f".{key}{PART_SUFFIX}"
    half.mkdir(parents=True)
    (half / "sr.dcm").write_bytes(b"cut short")
    worker, spool, outbox, _ = make_worker(tmp_path, explainer)  # the restart
    assert not half.exists()
    assert worker.run_once() == 1
    assert outbox.journalled() == [key] and len(list((outbox.dir / key).iterdir())) == 3
