"""The DIMSE round trip against a real PACS: Orthanc C-STOREs a mammogram to the listener and gets its results back.

Orthanc runs in a private network namespace (``unshare -n``) as in
``tests/pacs/test_orthanc.py``, whose checks of what the namespace needs are
used here; the script ``orthanc_dimse.py`` runs inside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import require_or_skip
from tests.pacs.conftest import dciodvfy, make_mammogram
from tests.pacs.test_orthanc import SOP_CLASSES, _missing, _plugin

SCRIPT = Path(__file__).with_name("orthanc_dimse.py")
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


@pytest.fixture(scope="module")
def roundtrip(
    tiny_bundle: Path, phantom_png: bytes, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    """Run the round trip once: its report and its output folder."""
    reason = _missing()
    if reason is not None:
        require_or_skip(f"the Orthanc DIMSE round trip cannot run: {reason}")
    plugin = _plugin()
    assert plugin is not None
    out = tmp_path_factory.mktemp("orthanc-dimse")
    (out / "mammogram.dcm").write_bytes(make_mammogram(phantom_png))
    command = [
        "unshare", "-n", "--", "bash", "-c", 'ip link set lo up && exec "$0" "$@"',
        sys.executable, str(SCRIPT), "--bundle", str(tiny_bundle), "--mammogram", str(out / "mammogram.dcm"),
        "--plugin", plugin, "--out", str(out),
    ]  # fmt: skip
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=480)
    logs = "".join(
        f"\n--- {name} ---\n" + (out / name).read_text()[-3000:]
        for name in ("orthanc.log", "listener.log")
        if (out / name).exists()
    )
    assert run.returncode == 0, f"round trip failed ({run.returncode}):\n{run.stderr[-4000:]}{logs}"
    return json.loads((out / "report.json").read_text()), out


@pytest.mark.slow
def test_orthanc_pushes_a_mammogram_and_receives_its_results_in_the_same_study(
    roundtrip: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    report, out = roundtrip
    assert report["store"]["status"] == 200 and report["store"]["body"]["FailedInstancesCount"] == 0
    classes = sorted(i["sop_class_uid"] for i in report["instances"])
    assert classes == sorted([MG_FOR_PRESENTATION, *SOP_CLASSES.values()])  # the source and its three results
    source = pydicom.dcmread(out / "mammogram.dcm", stop_before_pixels=True)
    for kind, sop_class in SOP_CLASSES.items():
        data = (out / f"{sop_class}.dcm").read_bytes()
        result = pydicom.dcmread(out / f"{sop_class}.dcm")
        assert result.StudyInstanceUID == source.StudyInstanceUID and result.PatientID == source.PatientID
        assert dciodvfy(data, tmp_path) == [], kind
    assert [key.rsplit("_", 1)[0] for key in report["outbox"]] == [source.SOPInstanceUID]  # delivered, once
    assert report["listener_exit"] == 0
    print(f"Orthanc's C-STORE to all three results in its study: {report['timings_s']['store_to_results']:.1f} s")
