"""The PACS slow, resetting connections, or failing in the middle of a STOW-RS: Orthanc behind a fault proxy.

``pacs_faults.py`` runs every scenario once, in a network namespace of its
own (as ``tests/pacs/test_orthanc.py`` runs the round trip), against
Orthanc with its DICOMweb plugin. The service tries each call twice
(``dicomweb_retries=1``) with a 2 s timeout. Needs root (or
CAP_SYS_ADMIN), ``unshare``, ``ip`` and Debian's ``orthanc`` and
``orthanc-dicomweb``; fails without them (``require_or_skip`` in ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_or_skip
from tests.faults.conftest import FaultRow
from tests.faults.pacs_faults import SCENARIOS, SECONDARY_CAPTURE, TIMEOUT_S
from tests.pacs.conftest import MG_FOR_PRESENTATION, make_mammogram
from tests.pacs.test_orthanc import SOP_CLASSES
from tests.pacs.test_orthanc import _missing as orthanc_missing
from tests.pacs.test_orthanc import _plugin as orthanc_plugin

SCRIPT = Path(__file__).with_name("pacs_faults.py")
TRIES = 2

INJECTED = {
    "latency": f"every answer held back {SCENARIOS['latency'][0].delay_s:g} s (timeout {TIMEOUT_S:g} s)",
    "reset_every_try": "TCP reset after 32 kB of every WADO-RS answer",
    "reset_once": "TCP reset after 32 kB of the first WADO-RS answer only; results stored",
    "stow_reset": "TCP reset after 16 kB of every STOW-RS upload",
    "stow_503": "503 answered after 16 kB of every STOW-RS upload, the rest never read",
    "stow_refused_in_part": "Orthanc refuses the Secondary Capture of the three results (Lua filter)",
}


@pytest.fixture(scope="module")
def report(
    tiny_bundle: Path,
    phantom_png: bytes,
    tmp_path_factory: pytest.TempPathFactory,
    fault_table: Callable[[FaultRow], None],
) -> dict[str, dict[str, Any]]:
    """Run every scenario once; their reports by name, each also a row of the fault table."""
    reason = orthanc_missing()
    if reason is not None:
        require_or_skip(f"the PACS faults need Orthanc in a network namespace: {reason}")
    plugin = orthanc_plugin()
    assert plugin is not None
    out = tmp_path_factory.mktemp("pacs-faults")
    for name in SCENARIOS:
        (out / f"{name}.dcm").write_bytes(make_mammogram(phantom_png))
    command = [
        "unshare", "-n", "--", "bash", "-c", 'ip link set lo up && exec "$0" "$@"',
        sys.executable, str(SCRIPT), "--bundle", str(tiny_bundle), "--mammograms", str(out),
        "--plugin", plugin, "--out", str(out),
    ]  # fmt: skip
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=480)
    log = out / "orthanc.log"
    assert run.returncode == 0, f"PACS faults failed ({run.returncode}):\n{run.stderr[-4000:]}\n--- Orthanc ---\n" + (
        log.read_text()[-3000:] if log.exists() else "(no log)"
    )
    scenarios: dict[str, dict[str, Any]] = json.loads((out / "report.json").read_text())["scenarios"]
    for name, seen in scenarios.items():
        claimed = len(seen["body"].get("stored", []))
        results = len(seen["study_holds"]) - 1  # the source image is the study's first instance
        code = seen["body"]["error"]["code"] if "error" in seen["body"] else None
        fault_table(
            FaultRow(
                fault=f"PACS: {name.replace('_', ' ')}",
                injected=INJECTED[name],
                acknowledged=claimed,
                found=results,
                answers={f"{seen['status']} {code}" if code else str(seen["status"]): 1},
                notes=f"results claimed stored / found in the study; {seen['connections']} connection(s), "
                f"{seen['seconds']} s",
            )
        )
    return scenarios


def error(seen: dict[str, Any]) -> tuple[int, str]:
    return seen["status"], seen["body"]["error"]["code"]


def test_latency_beyond_the_timeout_is_504_pacs_timeout(report: dict[str, dict[str, Any]]) -> None:
    seen = report["latency"]
    assert error(seen) == (504, "pacs_timeout")
    assert seen["retry_after"] is not None
    assert f"on each of {TRIES} tries" in seen["body"]["error"]["message"]
    assert seen["connections"] == TRIES
    assert seen["seconds"] >= TRIES * TIMEOUT_S


def test_a_reset_mid_transfer_is_retried_then_502(report: dict[str, dict[str, Any]]) -> None:
    seen = report["reset_every_try"]
    assert error(seen) == (502, "pacs_unavailable")
    assert seen["retry_after"] is not None
    assert f"on each of {TRIES} tries" in seen["body"]["error"]["message"]
    assert seen["connections"] == TRIES


def test_a_single_reset_is_retried_and_the_explanation_stored(report: dict[str, dict[str, Any]]) -> None:
    seen = report["reset_once"]
    assert seen["status"] == 200, seen["body"]
    assert {s["kind"] for s in seen["body"]["stored"]} == set(SOP_CLASSES)
    assert seen["study_holds"] == sorted([MG_FOR_PRESENTATION, *SOP_CLASSES.values()])
    assert seen["connections"] >= TRIES


@pytest.mark.parametrize("name", ["stow_reset", "stow_503"])
def test_a_stow_cut_halfway_stores_nothing_and_claims_nothing(report: dict[str, dict[str, Any]], name: str) -> None:
    seen = report[name]
    assert error(seen) == (502, "pacs_unavailable")
    assert "stored" not in seen["body"]
    assert "storing the results (STOW-RS)" in seen["body"]["error"]["message"]
    assert seen["study_holds"] == [MG_FOR_PRESENTATION]  # the PACS kept no part of the upload


def test_a_stow_refused_in_part_claims_nothing_stored(report: dict[str, dict[str, Any]]) -> None:
    """Orthanc answers the STOW-RS as if all three were stored, yet drops the one its filter refuses: the
    service finds that out (QIDO-RS) and reports none stored, naming what the study holds."""
    seen = report["stow_refused_in_part"]
    assert error(seen) == (502, "pacs_store_failed")
    assert "stored" not in seen["body"]
    message = seen["body"]["error"]["message"]
    assert "lacks secondary_capture" in message and "it holds sr, presentation_state of them" in message
    assert seen["study_holds"] == sorted([MG_FOR_PRESENTATION, SOP_CLASSES["sr"], SOP_CLASSES["presentation_state"]])
    assert SECONDARY_CAPTURE not in seen["study_holds"]
