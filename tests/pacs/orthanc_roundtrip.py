"""The client side of the Orthanc round trip; ``test_orthanc.py`` runs it inside a private network namespace.

It starts Orthanc with the DICOMweb plugin on the namespace's loopback, uploads
the mammogram through Orthanc's REST API, runs the service app (TestClient) on
the bundle with ``dicomweb_url`` pointing at Orthanc, explains the mammogram by
its UIDs, finds the results in the study with QIDO-RS and fetches them with
WADO-RS, then stops Orthanc and asks once more. It asserts nothing: it writes
what it saw to ``<out>/report.json`` and the fetched objects to ``<out>/*.dcm``
for the test to judge. The service's JSON logs go to stderr.

``python orthanc_roundtrip.py --bundle DIR --mammogram FILE --plugin SO --out DIR [--port 8042]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient

from service.logging import configure_logging
from service.main import create_app
from service.pacs.multipart import boundary_of, split
from service.settings import Settings

SOP_CLASS_UID = "00080016"
SERIES_INSTANCE_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"


def start_orthanc(
    work: Path, *, port: int, plugin: str, extra: dict[str, Any] | None = None
) -> subprocess.Popen[bytes]:
    """Orthanc with the DICOMweb plugin on 127.0.0.1:``port``, its files in ``work``; ``extra`` adds settings."""
    config = {
        "Name": "deepminer-test",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "ConcurrentJobs": 1,
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        **(extra or {}),
    }
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("wb")
    process = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"Orthanc exited with {process.returncode}; see {work / 'orthanc.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/system", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("Orthanc did not answer within 60 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def value(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value", [])
    return str(values[0]) if values else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--mammogram", type=Path, required=True)
    parser.add_argument("--plugin", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8042)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pacs = f"http://127.0.0.1:{args.port}"
    report: dict[str, Any] = {"timings_s": {}}
    configure_logging("debug")

    started = time.perf_counter()
    orthanc = start_orthanc(args.out, port=args.port, plugin=args.plugin)
    report["timings_s"]["orthanc_start"] = time.perf_counter() - started
    try:
        upload = httpx.post(f"{pacs}/instances", content=args.mammogram.read_bytes(), timeout=30)
        report["upload"] = {"status": upload.status_code, "body": upload.json()}

        settings = Settings(
            bundle=args.bundle,
            database_url=f"sqlite:///{args.out / 'labels.db'}",
            dicomweb_url=f"{pacs}/dicom-web",
            dicomweb_timeout_s=10,
            dicomweb_retries=1,
            dicomweb_backoff_s=0.1,
            log_level="debug",
        )
        with TestClient(create_app(settings)) as client:
            ask = json.loads((args.out / "request.json").read_text())
            started = time.perf_counter()
            explained = client.post("/dicomweb/explain", json={**ask, "store_results": True})
            report["timings_s"]["explain_and_store"] = time.perf_counter() - started
            report["explain"] = {"status": explained.status_code, "body": explained.json()}

            missing = client.post("/dicomweb/explain", json={**ask, "sop_uid": "1.2.826.0.1.3680043.8.498.1"})
            report["missing"] = {"status": missing.status_code, "body": missing.json()}

            qido = httpx.get(
                f"{pacs}/dicom-web/studies/{ask['study_uid']}/instances",
                params={"includefield": SOP_CLASS_UID},
                headers={"Accept": "application/dicom+json"},
                timeout=30,
            )
            instances = [
                {
                    "sop_class_uid": value(item, SOP_CLASS_UID),
                    "series_instance_uid": value(item, SERIES_INSTANCE_UID),
                    "sop_instance_uid": value(item, SOP_INSTANCE_UID),
                }
                for item in qido.json()
            ]
            report["qido"] = {"status": qido.status_code, "instances": instances}

            fetched = {}
            for stored in explained.json().get("stored", []):
                wado = httpx.get(
                    f"{pacs}/dicom-web/studies/{ask['study_uid']}/series/{stored['series_instance_uid']}"
                    f"/instances/{stored['sop_instance_uid']}",
                    headers={"Accept": 'multipart/related; type="application/dicom"'},
                    timeout=30,
                )
                boundary = boundary_of(wado.headers.get("content-type", ""))
                parts = split(wado.content, boundary) if wado.status_code == 200 and boundary else []
                if parts:
                    (args.out / f"{stored['kind']}.dcm").write_bytes(parts[0][1])
                fetched[stored["kind"]] = wado.status_code
            report["wado"] = fetched

            stop(orthanc)
            down = client.post("/dicomweb/explain", json=ask)
            report["pacs_down"] = {"status": down.status_code, "body": down.json()}
    finally:
        if orthanc.poll() is None:
            stop(orthanc)
        (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
