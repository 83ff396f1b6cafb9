"""The round trip against a real PACS: Orthanc with its DICOMweb plugin, in a private network namespace.

Orthanc 1.10 cannot bind to loopback alone, so it runs in a namespace of its
own (``unshare -n``, ``lo`` up), which nothing outside can reach, and the
client (``orthanc_roundtrip.py``: the service app in a TestClient) runs in the
same one. Needs root (or CAP_SYS_ADMIN), ``unshare``, ``ip``, Debian's
``orthanc``, ``orthanc-dicomweb`` and ``dicom3tools``; fails without them
(``require_or_skip`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import require_or_skip

SCRIPT = Path(__file__).with_name("orthanc_roundtrip.py")
KNOWN_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SOP_CLASSES = {
    "sr": "1.2.840.10008.5.1.4.1.1.88.33",
    "secondary_capture": "1.2.840.10008.5.1.4.1.1.7",
    "presentation_state": "1.2.840.10008.5.1.4.1.1.11.1",
}


def _plugin() -> str | None:
    """The DICOMweb plugin's shared object, as the Debian package lists it."""
    if shutil.which("dpkg"):
        listing = subprocess.run(["dpkg", "-L", "orthanc-dicomweb"], check=False, capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            if "libOrthancDicomWeb.so" in line and Path(line).is_file():
                return line
    return str(KNOWN_PLUGIN) if KNOWN_PLUGIN.is_file() else None


def _missing() -> str | None:
    """Why the round trip cannot run here, or None."""
    for tool, package in (("Orthanc", "orthanc"), ("unshare", "util-linux"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian package {package})"
    if _plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (Debian package orthanc-dicomweb)"
    probe = subprocess.run(
        ["unshare", "-n", "--", "ip", "link", "set", "lo", "up"], check=False, capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"cannot create a network namespace (unshare -n needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def roundtrip(
    tiny_bundle: Path, mammogram: bytes, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path, str]:
    """Run the round trip once: its report, its output folder, and the client's stderr (the service's logs)."""
    reason = _missing()
    if reason is not None:
        require_or_skip(f"the Orthanc round trip cannot run: {reason}")
    out = tmp_path_factory.mktemp("orthanc")
    source = pydicom.dcmread(io.BytesIO(mammogram), stop_before_pixels=True)
    (out / "mammogram.dcm").write_bytes(mammogram)
    (out / "request.json").write_text(
        json.dumps(
            {
                "study_uid": source.StudyInstanceUID,
                "series_uid": source.SeriesInstanceUID,
                "sop_uid": source.SOPInstanceUID,
            }
        )
    )
    plugin = _plugin()
    assert plugin is not None
    command = [
        "unshare", "-n", "--", "bash", "-c", 'ip link set lo up && exec "$0" "$@"',
        sys.executable, str(SCRIPT), "--bundle", str(tiny_bundle), "--mammogram", str(out / "mammogram.dcm"),
        "--plugin", plugin, "--out", str(out),
    ]  # fmt: skip
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=480)
    orthanc_log = out / "orthanc.log"
    assert run.returncode == 0, f"round trip failed ({run.returncode}):\n{run.stderr[-4000:]}\n--- Orthanc ---\n" + (
        orthanc_log.read_text()[-3000:] if orthanc_log.exists() else "(no log)"
    )
    return json.loads((out / "report.json").read_text()), out, run.stderr


def test_the_mammogram_is_explained_by_uids_and_its_results_join_its_study(
    roundtrip: tuple[dict[str, Any], Path, str],
) -> None:
    report, out, _ = roundtrip
    assert report["upload"]["status"] == 200
    explained = report["explain"]
    assert explained["status"] == 200, explained
    request = json.loads((out / "request.json").read_text())
    stored = {s["kind"]: s for s in explained["body"]["stored"]}
    assert set(stored) == set(SOP_CLASSES)
    # QIDO-RS lists the source and the three results in the source's study.
    found = {i["sop_instance_uid"]: i for i in report["qido"]["instances"]}
    assert request["sop_uid"] in found
    for kind, sop_class in SOP_CLASSES.items():
        instance = found[stored[kind]["sop_instance_uid"]]
        assert instance["sop_class_uid"] == sop_class
        assert instance["series_instance_uid"] == stored[kind]["series_instance_uid"]
        assert report["wado"][kind] == 200


def test_the_fetched_results_carry_the_explanation_and_pass_dciodvfy(
    roundtrip: tuple[dict[str, Any], Path, str], dicom_errors: Callable[[bytes], list[str]]
) -> None:
    report, out, _ = roundtrip
    request = json.loads((out / "request.json").read_text())
    body = report["explain"]["body"]
    for kind in SOP_CLASSES:
        data = (out / f"{kind}.dcm").read_bytes()
        ds = pydicom.dcmread(io.BytesIO(data))
        assert ds.StudyInstanceUID == request["study_uid"]
        assert ds.PatientID == pydicom.dcmread(out / "mammogram.dcm", stop_before_pixels=True).PatientID
        assert dicom_errors(data) == [], kind
    sr = pydicom.dcmread(out / "sr.dcm")
    text = str(sr)
    assert body["model"]["hash"] in text
    for name in body["scores"]:
        assert f"Image-level score of {name}" in text
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == request["sop_uid"]


def test_failures_of_the_real_pacs_are_clear_json_errors(roundtrip: tuple[dict[str, Any], Path, str]) -> None:
    report, _, _ = roundtrip
    assert report["missing"]["status"] == 404
    assert report["missing"]["body"]["error"]["code"] == "instance_not_found"
    assert report["pacs_down"]["status"] == 502
    assert report["pacs_down"]["body"]["error"]["code"] == "pacs_unavailable"


def test_the_service_logged_no_patient_identifier(
    roundtrip: tuple[dict[str, Any], Path, str], patient_identifiers: tuple[str, ...]
) -> None:
    _, _, logs = roundtrip
    assert '"logger": "service' in logs  # the service's JSON log lines are there to be checked
    assert not any(text in logs for text in patient_identifiers)
