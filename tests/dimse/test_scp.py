"""The Storage SCP in-process, over loopback associations: echo, durable C-STORE, AE titles, a full spool or disk."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from service.dimse import durable
from service.dimse.scp import OUT_OF_RESOURCES, PROCESSING_FAILURE, SUCCESS
from tests.dimse.conftest import CALLED, CALLING, InProcessScp, associate


def test_echo(start_scp: Callable[..., InProcessScp]) -> None:
    scp = start_scp()
    with associate(scp.port) as assoc:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == SUCCESS
    assert scp.count("deepminer_dimse_associations_total", outcome="accepted") == 1


def test_store_is_spooled_and_fsynced_before_success(
    start_scp: Callable[..., InProcessScp], new_instance: Callable[[], Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    scp = start_scp()
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(durable.os, "fsync", recording_fsync)
    sent = new_instance()
    uid = str(sent.SOPInstanceUID)
    with associate(scp.port) as assoc:
        status = assoc.send_c_store(sent)
        acknowledged = list(synced)  # what was fsynced by the time the success arrived
    assert status.Status == SUCCESS
    spooled = scp.spool.incoming / f"{uid}.dcm"
    part = [i for i, path in enumerate(acknowledged) if Path(path).name.startswith(f".{uid}.dcm.")]
    directory = [i for i, path in enumerate(acknowledged) if path == str(scp.spool.incoming)]
    assert part and directory and part[0] < directory[-1], acknowledged  # the data, then the rename into place
    received = pydicom.dcmread(spooled)
    assert str(received.SOPInstanceUID) == uid
    assert received.file_meta.TransferSyntaxUID == assoc.accepted_contexts[1].transfer_syntax[0]  # as negotiated
    assert np.array_equal(received.pixel_array, sent.pixel_array)
    assert scp.spool.depth() == 1 and scp.spool.bytes == spooled.stat().st_size
    assert scp.count("deepminer_dimse_instances_received_total", status="success") == 1


def test_a_failed_fsync_is_never_acknowledged(
    start_scp: Callable[..., InProcessScp], new_instance: Callable[[], Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    scp = start_scp()

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(durable.os, "fsync", failing_fsync)
    with associate(scp.port) as assoc:
        status = assoc.send_c_store(new_instance())
    assert status.Status == PROCESSING_FAILURE
    assert scp.spool.pending() == [] and scp.spool.bytes == 0
    assert list(scp.spool.incoming.iterdir()) == []  # no half-written file left either


@pytest.mark.parametrize("calling, called", [("INTRUDER", CALLED), (CALLING, "SOMEONE_ELSE")])
def test_an_association_with_a_title_not_allowed_is_refused(
    start_scp: Callable[..., InProcessScp], calling: str, called: str
) -> None:
    scp = start_scp()
    with associate(scp.port, calling=calling, called=called) as assoc:
        assert assoc.is_rejected and not assoc.is_established
    assert scp.count("deepminer_dimse_associations_total", outcome="rejected") == 1
    assert scp.count("deepminer_dimse_associations_total", outcome="accepted") == 0


def test_a_sop_class_it_cannot_explain_is_refused_at_negotiation(start_scp: Callable[..., InProcessScp]) -> None:
    scp = start_scp()
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=CALLED)
    try:
        assert assoc.is_established
        assert [c.abstract_syntax for c in assoc.accepted_contexts] == [Verification]
        assert [c.abstract_syntax for c in assoc.rejected_contexts] == [CTImageStorage]  # a CT is never acknowledged
    finally:
        assoc.release()


def test_a_full_spool_answers_out_of_resources(
    start_scp: Callable[..., InProcessScp], new_instance: Callable[[], Dataset]
) -> None:
    first, second = new_instance(), new_instance()
    scp = start_scp(max_spool_bytes=len(first.PixelData) * 3 // 2)
    with associate(scp.port) as assoc:
        assert assoc.send_c_store(first).Status == SUCCESS
        assert assoc.send_c_store(second).Status == OUT_OF_RESOURCES
    assert [scp.spool.sop_uid(p) for p in scp.spool.pending()] == [str(first.SOPInstanceUID)]
    assert scp.count("deepminer_dimse_instances_received_total", status="out_of_resources") == 1


def test_a_full_disk_answers_out_of_resources(
    start_scp: Callable[..., InProcessScp], new_instance: Callable[[], Dataset], tiny_disk: Callable[[str], Path]
) -> None:
    """A tmpfs of 1 MiB and a spool limit far above it: the disk fills first, and every later instance gets A700."""
    scp = start_scp(spool_dir=tiny_disk("1m") / "spool")
    statuses = []
    with associate(scp.port) as assoc:
        for _ in range(16):
            statuses.append(assoc.send_c_store(new_instance()).Status)
    acknowledged = statuses.count(SUCCESS)
    assert 0 < acknowledged < len(statuses)
    assert statuses == [SUCCESS] * acknowledged + [OUT_OF_RESOURCES] * (len(statuses) - acknowledged)
    assert scp.spool.depth() == acknowledged  # every success is on the disk; no refused one left a part behind
    assert [p for p in scp.spool.incoming.iterdir() if p.name.startswith(".")] == []
    for path in scp.spool.pending():  # and whole
        received = pydicom.dcmread(path)
        assert received.pixel_array.shape == (received.Rows, received.Columns)


def test_metric_names_pass_promtool(
    start_scp: Callable[..., InProcessScp], new_instance: Callable[[], Dataset], promtool: str
) -> None:
    scp = start_scp(max_spool_bytes=1)
    with associate(scp.port) as assoc:
        assert assoc.send_c_store(new_instance()).Status == OUT_OF_RESOURCES
    with associate(scp.port, calling="INTRUDER"):
        pass
    page = scp.metrics.render().decode()
    assert "deepminer_dimse_spool_depth" in page
    result = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
