"""The DICOM listener against a real PACS: Orthanc pushes mammograms by C-STORE and gets their results back.

Orthanc runs in a private network namespace (``unshare -n``) as in
``tests/pacs/test_orthanc.py``, whose checks of what the namespace needs are
used here; the script ``orthanc_dimse.py`` runs inside it, once, through four
cases (a calling AE title refused, the round trip, the listener SIGKILLed after
acknowledging a batch, Orthanc down while results wait), and each test judges
one case from its report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import require_or_skip
from tests.pacs.conftest import dciodvfy, make_mammogram
from tests.pacs.test_orthanc import SOP_CLASSES, _missing, _plugin

SCRIPT = Path(__file__).with_name("orthanc_dimse.py")
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
KILL_BATCH, DOWN_BATCH = 6, 4
STUDY = sorted([MG_FOR_PRESENTATION, *SOP_CLASSES.values()])
"""What a study holds once explained: the source and one SR, one Secondary Capture, one presentation state."""


@pytest.fixture(scope="module")
def run(tiny_bundle: Path, phantom_png: bytes, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """Run the four cases once: the report and the output folder."""
    reason = _missing()
    if reason is not None:
        require_or_skip(f"the Orthanc DIMSE cases cannot run: {reason}")
    plugin = _plugin()
    assert plugin is not None
    out = tmp_path_factory.mktemp("orthanc-dimse")
    for name in ("mammogram", "refused"):
        (out / f"{name}.dcm").write_bytes(make_mammogram(phantom_png))
    for folder, count in (("kill", KILL_BATCH), ("down", DOWN_BATCH)):
        (out / folder).mkdir()
        for index in range(count):
            (out / folder / f"{index}.dcm").write_bytes(make_mammogram(phantom_png))
    command = [
        "unshare", "-n", "--", "bash", "-c", 'ip link set lo up && exec "$0" "$@"',
        sys.executable, str(SCRIPT), "--bundle", str(tiny_bundle), "--mammogram", str(out / "mammogram.dcm"),
        "--refused", str(out / "refused.dcm"), "--kill-batch", str(out / "kill"), "--down-batch", str(out / "down"),
        "--plugin", plugin, "--out", str(out),
    ]  # fmt: skip
    process = subprocess.run(command, check=False, capture_output=True, text=True, timeout=480)
    logs = "".join(
        f"\n--- {path.relative_to(out)} ---\n" + path.read_text()[-3000:]
        for path in [*sorted(out.glob("orthanc*.log")), *sorted(out.glob("orthanc-*/orthanc.log"))]
        + sorted(out.glob("listener-*.log"))
    )
    assert process.returncode == 0, f"the cases failed ({process.returncode}):\n{process.stderr[-4000:]}{logs}"
    return json.loads((out / "report.json").read_text()), out


def uids(keys: list[str]) -> list[str]:
    """The SOP Instance UIDs of outbox keys (``<SOP Instance UID>_<bundle hash>``)."""
    return [key.rsplit("_", 1)[0] for key in keys]


def sent_twice(report: dict[str, Any], studies: set[str]) -> int:
    """Results Orthanc received more than once from the listener in ``studies`` (the same SOP Instance UID)."""
    receipts = report["receipts"]
    counts = Counter(sop for sop, study, _, calling in receipts if calling == "DEEPMINER" and study in studies)
    return sum(n - 1 for n in counts.values())


def studies_of(out: Path, folder: str) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in (out / folder).glob("*.dcm")}


def check_delivered_once(report: dict[str, Any], case: dict[str, Any]) -> None:
    """Every instance of the case's batch: committed once in the journal, delivered, its study complete in Orthanc."""
    batch = [item["sop_uid"] for item in case["batch"]]
    journal = Counter(uids(report["final"]["journal"]))
    assert {sop: journal[sop] for sop in batch} == dict.fromkeys(batch, 1)  # one commit each: none explained twice
    assert set(batch) <= set(uids(report["final"]["delivered"]))
    assert case["studies"] == dict.fromkeys(batch, STUDY)  # exactly the three results in each study, once


@pytest.mark.slow
def test_orthanc_pushes_a_mammogram_and_receives_its_results_in_the_same_study(
    run: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    report, out = run
    case = report["roundtrip"]
    assert case["store"]["status"] == 200 and case["store"]["body"]["FailedInstancesCount"] == 0
    assert sorted(i["sop_class_uid"] for i in case["instances"]) == STUDY  # the source and its three results
    source = pydicom.dcmread(out / "mammogram.dcm", stop_before_pixels=True)
    for kind, sop_class in SOP_CLASSES.items():
        data = (out / f"{sop_class}.dcm").read_bytes()
        result = pydicom.dcmread(out / f"{sop_class}.dcm")
        assert result.StudyInstanceUID == source.StudyInstanceUID and result.PatientID == source.PatientID
        assert dciodvfy(data, tmp_path) == [], kind
    assert uids(case["delivered"]) == [source.SOPInstanceUID]  # delivered, once
    assert report["listener_exit"] == 0
    print(f"Orthanc's C-STORE to all three results in its study: {case['seconds']:.1f} s")


@pytest.mark.slow
def test_orthanc_calling_from_an_ae_title_not_allowed_is_refused_and_nothing_is_spooled(
    run: tuple[dict[str, Any], Path],
) -> None:
    report, out = run
    case = report["refused"]
    assert case["store"]["status"] != 200, case["store"]
    assert "Association Rejected" in case["store"]["body"]["Details"]
    assert case["rejected"] == 1 and case["received"] == 0 and case["spool_depth"] == 0
    assert [event["calling_ae_title"] for event in case["rejected_events"]] == ["INTRUDER"]
    assert case["state"] == {"incoming": [], "outbox": [], "delivered": [], "dead_letter": [], "journal": []}
    refused = pydicom.dcmread(out / "refused.dcm", stop_before_pixels=True)
    assert str(refused.SOPInstanceUID) not in uids(report["final"]["journal"])  # never explained, then or later
    assert case["study_at_end"] == [MG_FOR_PRESENTATION]  # no results came back to its study
    print("Orthanc calling as INTRUDER: association rejected, 0 instances spooled")


@pytest.mark.slow
def test_sigkill_after_acknowledging_orthancs_batch_then_restart_delivers_every_instance_once(
    run: tuple[dict[str, Any], Path],
) -> None:
    report, out = run
    case = report["kill"]
    assert case["store"]["status"] == 200, case["store"]
    body = case["store"]["body"]
    acknowledged = body["InstancesCount"] - body["FailedInstancesCount"]
    assert acknowledged == KILL_BATCH
    batch = {item["sop_uid"] for item in case["batch"]}
    at_kill = case["at_kill"]
    explained = batch & set(uids(at_kill["journal"] + at_kill["outbox"] + at_kill["delivered"]))
    spooled = batch & set(at_kill["incoming"])
    assert explained | spooled == batch  # every acknowledged instance was on disk when the listener died
    check_delivered_once(report, case)
    twice = sent_twice(report, studies_of(out, "kill"))
    assert twice <= 1  # only a result acknowledged in the instant before the kill may come again, same UID
    print(
        f"acknowledged {acknowledged}, explained before the kill {len(explained)}, "
        f"explained after the restart {len(batch - explained)}, delivered {len(batch)} result sets, "
        f"sent twice {twice}; restart {case['restart_s']:.1f} s, then all results in "
        f"{case['restart_to_results_s']:.1f} s"
    )


@pytest.mark.slow
def test_results_wait_while_orthanc_is_down_and_all_arrive_once_it_is_back(run: tuple[dict[str, Any], Path]) -> None:
    report, out = run
    case = report["down"]
    assert case["store"]["status"] == 200 and case["store"]["body"]["FailedInstancesCount"] == 0
    batch = {item["sop_uid"] for item in case["batch"]}
    undelivered = batch - set(uids(case["at_kill"]["delivered"]))
    assert undelivered  # some results had to wait for Orthanc: the case tested what it names
    assert case["failed_tries_while_down"] >= 2 and case["most_tries_of_one_result_set"] >= 2  # retried, in vain
    assert batch <= set(uids(case["at_restart"]["journal"]))  # explained while Orthanc was down
    check_delivered_once(report, case)
    assert report["final"]["dead_letter"] == [] and report["dead_lettered"] == 0
    assert report["final"]["incoming"] == [] and report["final"]["outbox"] == []
    twice = sent_twice(report, studies_of(out, "down"))
    assert twice <= 1  # only a result Orthanc stored in the instant before its kill may come again, same UID
    print(
        f"acknowledged {len(batch)}, undelivered when Orthanc was killed {len(undelivered)}, failed tries while "
        f"down {case['failed_tries_while_down']} (up to {case['most_tries_of_one_result_set']} of one result set), "
        f"Orthanc down {case['down_s']:.1f} s; delivered {len(batch)} result sets "
        f"{case['back_to_results_s']:.1f} s after it was back, sent twice {twice}"
    )
