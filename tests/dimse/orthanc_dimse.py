"""The DIMSE round trip with Orthanc; ``test_orthanc_dimse.py`` runs it inside a private network namespace.

Starts Orthanc with its DICOM server on (AE title ORTHANC) and the listener
(``python -m service.dimse``) with Orthanc as the results' destination, uploads
the mammogram to Orthanc over REST, has Orthanc C-STORE it to the listener
(``/modalities/deepminer/store``), and waits until the study holds the three
results, which it downloads. It asserts nothing: it writes what it saw to
``<out>/report.json`` and the results to ``<out>/<SOP Class UID>.dcm``; the
listener's logs go to ``<out>/listener.log``.

``python orthanc_dimse.py --bundle DIR --mammogram FILE --plugin SO --out DIR``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.pacs.orthanc_roundtrip import start_orthanc, stop

HTTP_PORT, ORTHANC_DICOM_PORT, LISTENER_PORT = 8042, 4242, 11112


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--mammogram", type=Path, required=True)
    parser.add_argument("--plugin", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    pacs = f"http://127.0.0.1:{HTTP_PORT}"
    report: dict[str, Any] = {"timings_s": {}}
    orthanc = start_orthanc(
        args.out,
        port=HTTP_PORT,
        plugin=args.plugin,
        extra={
            "DicomServerEnabled": True,
            "DicomAet": "ORTHANC",
            "DicomPort": ORTHANC_DICOM_PORT,
            "DicomModalities": {"deepminer": ["DEEPMINER", "127.0.0.1", LISTENER_PORT]},
        },
    )
    env = {
        **os.environ,
        "DEEPMINER_BUNDLE": str(args.bundle),
        "DEEPMINER_DATABASE_URL": f"sqlite:///{args.out / 'labels.db'}",
        "DEEPMINER_DIMSE_PORT": str(LISTENER_PORT),
        "DEEPMINER_DIMSE_METRICS_PORT": "0",
        "DEEPMINER_DIMSE_ALLOWED_CALLING_AE_TITLES": '["ORTHANC"]',
        "DEEPMINER_DIMSE_SPOOL_DIR": str(args.out / "spool"),
        "DEEPMINER_DIMSE_POLL_S": "0.1",
        "DEEPMINER_DIMSE_DESTINATION_AE_TITLE": "ORTHANC",
        "DEEPMINER_DIMSE_DESTINATION_PORT": str(ORTHANC_DICOM_PORT),
    }
    with (args.out / "listener.log").open("wb") as log:
        listener = subprocess.Popen([sys.executable, "-m", "service.dimse"], env=env, cwd=ROOT, stderr=log)
    try:
        started = time.perf_counter()
        while httpx.post(f"{pacs}/modalities/deepminer/echo", content="{}", timeout=30).status_code != 200:
            if listener.poll() is not None or time.perf_counter() - started > 180:
                raise SystemExit(f"the listener did not answer Orthanc's C-ECHO ({listener.poll()})")
            time.sleep(0.5)
        report["timings_s"]["listener_start"] = time.perf_counter() - started
        upload = httpx.post(f"{pacs}/instances", content=args.mammogram.read_bytes(), timeout=30).json()
        report["upload"] = upload
        started = time.perf_counter()
        store = httpx.post(f"{pacs}/modalities/deepminer/store", json={"Resources": [upload["ID"]]}, timeout=120)
        report["store"] = {"status": store.status_code, "body": store.json()}
        study = upload["ParentStudy"]
        instances: list[dict[str, Any]] = []
        while time.perf_counter() - started < 180:
            instances = httpx.get(f"{pacs}/studies/{study}/instances", params={"expand": "true"}, timeout=30).json()
            if len(instances) >= 4:
                break
            time.sleep(0.5)
        report["timings_s"]["store_to_results"] = time.perf_counter() - started
        report["instances"] = []
        for instance in instances:
            tags = httpx.get(f"{pacs}/instances/{instance['ID']}/simplified-tags", timeout=30).json()
            report["instances"].append({"sop_class_uid": tags.get("SOPClassUID"), "series": instance["ParentSeries"]})
            if instance["ID"] != upload["ID"]:
                data = httpx.get(f"{pacs}/instances/{instance['ID']}/file", timeout=30).content
                (args.out / f"{tags.get('SOPClassUID')}.dcm").write_bytes(data)
        report["outbox"] = sorted(p.name for p in (args.out / "spool" / "delivered").iterdir())
    finally:
        listener.terminate()
        report["listener_exit"] = listener.wait(timeout=60)
        stop(orthanc)
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
