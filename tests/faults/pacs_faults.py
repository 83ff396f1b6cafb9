"""The PACS faults, run inside a private network namespace by ``test_pacs_faults.py``.

Orthanc (the real PACS, with its DICOMweb plugin) listens on the namespace's
loopback; a :class:`~tests.faults.proxy.FaultProxy` sits between it and the
service app (TestClient), whose ``dicomweb_url`` points at the proxy. Each
scenario explains a mammogram of its own study by its UIDs while the proxy
(or Orthanc itself) injects one fault, then asks Orthanc directly what the
study holds. It asserts nothing: it writes what it saw to ``<out>/report.json``.

``python pacs_faults.py --bundle DIR --mammograms DIR --plugin SO --out DIR``; each
``<scenario>.dcm`` in ``--mammograms`` is the source image of that scenario.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient

from service.logging import configure_logging
from service.main import create_app
from service.settings import Settings
from tests.faults.proxy import Fault, FaultProxy
from tests.pacs.orthanc_roundtrip import SOP_CLASS_UID, start_orthanc, stop, value

ORTHANC_PORT = 8042
TIMEOUT_S = 2.0  # dicomweb_timeout_s: an answer within it even on a busy machine
RETRIES = 1  # dicomweb_retries: two tries in all
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
CUT_UPLOAD_AT = 16 * 1024  # beyond the GET of a retrieve, within the STOW-RS of the results

# The scenarios: the fault, and whether the results are to be stored.
SCENARIOS: dict[str, tuple[Fault, bool]] = {
    "latency": (Fault(delay_s=4 * TIMEOUT_S), False),
    "reset_every_try": (Fault(cut_answer_after=32 * 1024), False),
    "reset_once": (Fault(cut_answer_after=32 * 1024, first_connections=1), True),
    "stow_reset": (Fault(cut_upload_after=CUT_UPLOAD_AT), True),
    "stow_503": (
        Fault(
            cut_upload_after=CUT_UPLOAD_AT,
            early_answer=b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        True,
    ),
    "stow_refused_in_part": (Fault(), True),  # Orthanc itself refuses the Secondary Capture of this study
}

# Orthanc's filter of received instances (Lua): refuse one kind of result in one study, so STOW-RS stores some.
REFUSE_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
   if dicom.StudyInstanceUID == '{study}' and dicom.SOPClassUID == '{sop_class}' then
      return false
   end
   return true
end
"""


def study_instances(pacs: str, study: str) -> list[str]:
    """The SOP Class UID of each instance the study holds, asked of Orthanc directly (QIDO-RS)."""
    answer = httpx.get(
        f"{pacs}/dicom-web/studies/{study}/instances",
        params={"includefield": SOP_CLASS_UID},
        headers={"Accept": "application/dicom+json"},
        timeout=30,
    )
    if answer.status_code == 204 or not answer.content.strip():
        return []
    answer.raise_for_status()
    return sorted(str(value(item, SOP_CLASS_UID)) for item in answer.json())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--mammograms", type=Path, required=True)
    parser.add_argument("--plugin", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    configure_logging("info")

    sources = {name: (args.mammograms / f"{name}.dcm").read_bytes() for name in SCENARIOS}
    uids = {}
    for name, data in sources.items():
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        uids[name] = {
            "study_uid": str(ds.StudyInstanceUID),
            "series_uid": str(ds.SeriesInstanceUID),
            "sop_uid": str(ds.SOPInstanceUID),
        }
    lua = args.out / "refuse.lua"
    lua.write_text(REFUSE_LUA.format(study=uids["stow_refused_in_part"]["study_uid"], sop_class=SECONDARY_CAPTURE))
    orthanc = start_orthanc(args.out, port=ORTHANC_PORT, plugin=args.plugin, extra={"LuaScripts": [str(lua)]})
    pacs = f"http://127.0.0.1:{ORTHANC_PORT}"
    proxy = FaultProxy(("127.0.0.1", ORTHANC_PORT))
    report: dict[str, Any] = {"timeout_s": TIMEOUT_S, "tries": RETRIES + 1, "scenarios": {}}
    try:
        for data in sources.values():
            httpx.post(f"{pacs}/instances", content=data, timeout=30).raise_for_status()
        settings = Settings(
            bundle=args.bundle,
            database_url=f"sqlite:///{args.out / 'labels.db'}",
            dicomweb_url=f"http://127.0.0.1:{proxy.port}/dicom-web",
            dicomweb_timeout_s=TIMEOUT_S,
            dicomweb_retries=RETRIES,
            dicomweb_backoff_s=0.05,
        )
        with TestClient(create_app(settings)) as client:
            for name, (fault, store) in SCENARIOS.items():
                proxy.set_fault(fault)
                started = time.perf_counter()
                answer = client.post("/dicomweb/explain", json={**uids[name], "store_results": store})
                report["scenarios"][name] = {
                    "status": answer.status_code,
                    "retry_after": answer.headers.get("retry-after"),
                    "body": answer.json(),
                    "seconds": round(time.perf_counter() - started, 2),
                    "connections": proxy.connections,
                    "study_holds": study_instances(pacs, uids[name]["study_uid"]),
                }
    finally:
        proxy.close()
        stop(orthanc)
        (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
