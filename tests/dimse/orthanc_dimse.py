"""The listener against Orthanc over DIMSE; ``test_orthanc_dimse.py`` runs it inside a private network namespace.

One Orthanc (AE title ORTHANC, its DICOM server on) and the listener
(``python -m service.dimse``, results sent back to Orthanc) go through four
cases in turn, each on mammograms of its own (one study each), uploaded to
Orthanc over REST and pushed by Orthanc's ``/modalities/{name}/store``:

1. **refused**: Orthanc's modality ``intruder`` calls the listener as
   ``INTRUDER``, a calling AE title the listener does not allow;
2. **roundtrip**: Orthanc pushes one mammogram and its study gets the three results;
3. **kill**: Orthanc pushes a batch, the listener is SIGKILLed as soon as
   Orthanc's store returns (every instance acknowledged), then started again;
4. **down**: Orthanc pushes a batch and is SIGKILLed as soon as its store
   returns; once the listener has explained the batch and a retry of its
   results has failed too, Orthanc starts again on the same storage, and the
   results must arrive.

Orthanc's Lua ``ReceivedInstanceFilter`` writes one line per instance it
receives (``received.tsv``), repeats included, which a PACS otherwise hides by
storing an instance once. The script asserts nothing: it writes what it saw to
``<out>/report.json``, the round trip's results to ``<out>/<SOP Class UID>.dcm``,
the listener's logs to ``<out>/listener-<run>.log``.

``python orthanc_dimse.py --bundle DIR --mammogram FILE --kill-batch DIR --down-batch DIR --refused FILE
--plugin SO --out DIR``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydicom

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from service.dimse.outbox import JOURNAL
from tests.pacs.orthanc_roundtrip import start_orthanc, stop

HTTP_PORT, ORTHANC_DICOM_PORT, LISTENER_PORT, METRICS_PORT = 8042, 4242, 11112, 9104
PACS = f"http://127.0.0.1:{HTTP_PORT}"
INTRUDER = "INTRUDER"
RECEIVED_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  local line = table.concat({dicom.SOPInstanceUID or "", dicom.StudyInstanceUID or "",
                             origin.RequestOrigin or "", origin.RemoteAet or ""}, "\\t")
  local f = io.open(%s, "a")
  f:write(line .. "\\n")
  f:close()
  return true
end
"""


class Listener:
    """``python -m service.dimse`` sending its results to Orthanc; each run logs to ``listener-<run>.log``."""

    def __init__(self, bundle: Path, out: Path) -> None:
        self.out, self.spool = out, out / "spool"
        self.env = {
            **os.environ,
            "DEEPMINER_BUNDLE": str(bundle),
            "DEEPMINER_DATABASE_URL": f"sqlite:///{out / 'labels.db'}",
            "DEEPMINER_INTRA_OP_THREADS": "1",
            "DEEPMINER_DIMSE_PORT": str(LISTENER_PORT),
            "DEEPMINER_DIMSE_METRICS_PORT": str(METRICS_PORT),
            "DEEPMINER_DIMSE_ALLOWED_CALLING_AE_TITLES": '["ORTHANC"]',
            "DEEPMINER_DIMSE_SPOOL_DIR": str(self.spool),
            "DEEPMINER_DIMSE_POLL_S": "0.1",
            "DEEPMINER_DIMSE_DESTINATION_AE_TITLE": "ORTHANC",
            "DEEPMINER_DIMSE_DESTINATION_PORT": str(ORTHANC_DICOM_PORT),
            # Orthanc is down for seconds in the last case: retries start soon and never run out meanwhile.
            "DEEPMINER_DIMSE_SEND_BACKOFF_S": "0.5",
            "DEEPMINER_DIMSE_SEND_RETRIES": "20",
        }
        self.runs: list[subprocess.Popen[bytes]] = []

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.runs[-1]

    def start(self) -> float:
        """Start a run and wait until Orthanc's C-ECHO gets through to it; the seconds that took."""
        started = time.perf_counter()
        with (self.out / f"listener-{len(self.runs)}.log").open("wb") as log:
            self.runs.append(
                subprocess.Popen([sys.executable, "-m", "service.dimse"], env=self.env, cwd=ROOT, stderr=log)
            )
        while httpx.post(f"{PACS}/modalities/deepminer/echo", content="{}", timeout=30).status_code != 200:
            if self.process.poll() is not None or time.perf_counter() - started > 180:
                raise SystemExit(f"the listener did not answer Orthanc's C-ECHO ({self.process.poll()})")
            time.sleep(0.3)
        return time.perf_counter() - started

    def metric(self, sample: str) -> float:
        """One sample of the running listener's /metrics, e.g. ``deepminer_dimse_spool_depth``; 0 when absent."""
        text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def journal(self) -> list[str]:
        """The outbox journal's keys, one per commit (read only: the listener owns the spool)."""
        path = self.spool / "outbox" / JOURNAL
        return [json.loads(line)["key"] for line in path.read_text().splitlines()] if path.exists() else []

    def listing(self, folder: str, *, suffix: str = "") -> list[str]:
        """Names in a folder of the spool (``incoming``, ``outbox``, ``delivered``, ``dead-letter``), without
        ``suffix`` and without the journal or half-written entries."""
        path = self.spool / folder
        names = [p.name.removesuffix(suffix) for p in path.iterdir()] if path.exists() else []
        return sorted(n for n in names if not n.startswith(".") and n != JOURNAL)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The log lines of every run so far whose ``event`` is ``name``."""
        found = []
        for run in range(len(self.runs)):
            for line in (self.out / f"listener-{run}.log").read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("event") == name:
                    found.append(json.loads(line))
        return found

    def state(self) -> dict[str, list[str]]:
        """What the spool holds: instances waiting, keys committed, delivered, dead-lettered, and the journal."""
        return {
            "incoming": self.listing("incoming", suffix=".dcm"),
            "outbox": self.listing("outbox"),
            "delivered": self.listing("delivered"),
            "dead_letter": self.listing("dead-letter"),
            "journal": self.journal(),
        }


class Pacs:
    """Orthanc, started (again) on one storage folder; each start has a work folder of its own for its log."""

    def __init__(self, out: Path, plugin: str) -> None:
        self.out, self.plugin = out, plugin
        self.received = out / "received.tsv"
        (out / "received.lua").write_text(RECEIVED_LUA % json.dumps(str(self.received)))
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        started = time.perf_counter()
        work = self.out if self.starts == 0 else self.out / f"orthanc-{self.starts}"
        work.mkdir(exist_ok=True)
        self.process = start_orthanc(
            work,
            port=HTTP_PORT,
            plugin=self.plugin,
            extra={
                "StorageDirectory": str(self.out / "storage"),
                "IndexDirectory": str(self.out / "storage"),
                "DicomServerEnabled": True,
                "DicomAet": "ORTHANC",
                "DicomPort": ORTHANC_DICOM_PORT,
                "LuaScripts": [str(self.out / "received.lua")],
                "DicomModalities": {
                    "deepminer": ["DEEPMINER", "127.0.0.1", LISTENER_PORT],
                    # The same listener, called from a second Orthanc-side AE title that it does not allow.
                    "intruder": {"AET": "DEEPMINER", "Host": "127.0.0.1", "Port": LISTENER_PORT, "LocalAet": INTRUDER},
                },
            },
        )
        self.starts += 1
        return time.perf_counter() - started

    def kill(self) -> None:
        """SIGKILL: a PACS that crashed, whatever association it was in."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def upload(self, path: Path) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.post(f"{PACS}/instances", content=path.read_bytes(), timeout=30).json()
        return answer

    def store(self, modality: str, ids: list[str]) -> dict[str, Any]:
        """Orthanc's C-STORE of ``ids`` to ``modality`` in one association; returns once it has ended."""
        answer = httpx.post(f"{PACS}/modalities/{modality}/store", json={"Resources": ids}, timeout=300)
        return {"status": answer.status_code, "body": answer.json()}

    def study_classes(self, study_id: str) -> list[str]:
        """The SOP Class UIDs of the instances Orthanc holds in a study, sorted."""
        instances = httpx.get(f"{PACS}/studies/{study_id}/instances", timeout=30).json()
        return sorted(
            httpx.get(f"{PACS}/instances/{i['ID']}/simplified-tags", timeout=30).json()["SOPClassUID"]
            for i in instances
        )

    def receipts(self) -> list[list[str]]:
        """Every instance Orthanc received so far: SOP Instance UID, Study Instance UID, origin, calling AE title."""
        lines = self.received.read_text().splitlines() if self.received.exists() else []
        return [line.split("\t") for line in lines]


def wait_for(done: Callable[[], bool], what: str, timeout_s: float = 180.0) -> float:
    """Seconds until ``done()``; exits with ``what`` after ``timeout_s``."""
    started = time.perf_counter()
    while not done():
        if time.perf_counter() - started > timeout_s:
            raise SystemExit(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.2)
    return time.perf_counter() - started


def upload_batch(pacs: Pacs, folder: Path) -> list[dict[str, str]]:
    """Upload every file of ``folder`` to Orthanc: its Orthanc ids and UIDs."""
    batch = []
    for path in sorted(folder.glob("*.dcm")):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        upload = pacs.upload(path)
        batch.append({"id": upload["ID"], "study_id": upload["ParentStudy"], "sop_uid": str(header.SOPInstanceUID)})
    return batch


def complete(pacs: Pacs, batch: list[dict[str, str]]) -> Callable[[], bool]:
    """Whether every study of ``batch`` holds its source and three results in Orthanc."""
    return lambda: all(len(pacs.study_classes(item["study_id"])) >= 4 for item in batch)


def refused(pacs: Pacs, listener: Listener, path: Path) -> dict[str, Any]:
    """Case 1: Orthanc calls as INTRUDER; its store must fail and nothing be spooled."""
    upload = pacs.upload(path)
    store = pacs.store("intruder", [upload["ID"]])
    return {
        "store": store,
        "study_id": upload["ParentStudy"],
        "rejected": listener.metric('deepminer_dimse_associations_total{outcome="rejected"}'),
        "received": listener.metric('deepminer_dimse_instances_received_total{status="success"}'),
        "spool_depth": listener.metric("deepminer_dimse_spool_depth"),
        "rejected_events": listener.events("dimse_rejected"),
        "state": listener.state(),
    }


def roundtrip(pacs: Pacs, listener: Listener, path: Path, out: Path) -> dict[str, Any]:
    """Case 2: one mammogram pushed, its study waited for, its results downloaded."""
    upload = pacs.upload(path)
    started = time.perf_counter()
    store = pacs.store("deepminer", [upload["ID"]])
    wait_for(lambda: len(pacs.study_classes(upload["ParentStudy"])) >= 4, "the round trip's results in Orthanc")
    seconds = time.perf_counter() - started
    instances = []
    for instance in httpx.get(f"{PACS}/studies/{upload['ParentStudy']}/instances", timeout=30).json():
        tags = httpx.get(f"{PACS}/instances/{instance['ID']}/simplified-tags", timeout=30).json()
        instances.append({"sop_class_uid": tags.get("SOPClassUID"), "series": instance["ParentSeries"]})
        if instance["ID"] != upload["ID"]:
            data = httpx.get(f"{PACS}/instances/{instance['ID']}/file", timeout=30).content
            (out / f"{tags.get('SOPClassUID')}.dcm").write_bytes(data)
    return {"store": store, "instances": instances, "seconds": seconds, "delivered": listener.listing("delivered")}


def killed(pacs: Pacs, listener: Listener, folder: Path) -> dict[str, Any]:
    """Case 3: SIGKILL of the listener as soon as Orthanc's store of a batch returns, then a restart."""
    batch = upload_batch(pacs, folder)
    store = pacs.store("deepminer", [item["id"] for item in batch])
    listener.process.send_signal(signal.SIGKILL)  # at once: no shutdown, the worker and the sender wherever they were
    listener.process.wait(timeout=30)
    at_kill = listener.state()
    restart_s = listener.start()
    seconds = wait_for(complete(pacs, batch), "the killed batch's results in Orthanc")
    return {
        "batch": batch,
        "store": store,
        "at_kill": at_kill,
        "restart_s": restart_s,
        "restart_to_results_s": seconds,
        "studies": {item["sop_uid"]: pacs.study_classes(item["study_id"]) for item in batch},
    }


def destination_down(pacs: Pacs, listener: Listener, folder: Path) -> dict[str, Any]:
    """Case 4: SIGKILL of Orthanc as soon as its store of a batch returns; started again on the same storage once
    the listener has explained the batch and a retry after the backoff has failed as well."""
    batch = upload_batch(pacs, folder)
    uids = {item["sop_uid"] for item in batch}
    store = pacs.store("deepminer", [item["id"] for item in batch])
    pacs.kill()
    at_kill = listener.state()
    retried_before = len(listener.events("dimse_send_retry"))

    def failed_tries() -> list[int]:
        """The try numbers of the failed deliveries since Orthanc's kill (2: a retry after the backoff failed)."""
        return [int(event["try"]) for event in listener.events("dimse_send_retry")[retried_before:]]

    started = time.perf_counter()
    wait_for(
        lambda: uids <= {key.rsplit("_", 1)[0] for key in listener.journal()} and max(failed_tries(), default=0) >= 2,
        "the batch explained and a retry failed while Orthanc is down",
    )
    at_restart = listener.state()
    tries = failed_tries()
    restart_s = pacs.start()
    down_s = time.perf_counter() - started
    seconds = wait_for(complete(pacs, batch), "the results in Orthanc after its restart")
    wait_for(lambda: uids <= {key.rsplit("_", 1)[0] for key in listener.listing("delivered")}, "delivered markers")
    return {
        "batch": batch,
        "store": store,
        "at_kill": at_kill,
        "at_restart": at_restart,
        "failed_tries_while_down": len(tries),
        "most_tries_of_one_result_set": max(tries),
        "down_s": down_s,
        "orthanc_restart_s": restart_s,
        "back_to_results_s": seconds,
        "studies": {item["sop_uid"]: pacs.study_classes(item["study_id"]) for item in batch},
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--mammogram", type=Path, required=True, help="the round trip's mammogram")
    parser.add_argument("--refused", type=Path, required=True, help="the mammogram Orthanc pushes as INTRUDER")
    parser.add_argument("--kill-batch", type=Path, required=True, help="folder of the batch before the SIGKILL")
    parser.add_argument("--down-batch", type=Path, required=True, help="folder of the batch before Orthanc's kill")
    parser.add_argument("--plugin", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report: dict[str, Any] = {"timings_s": {}}
    pacs = Pacs(args.out, args.plugin)
    report["timings_s"]["orthanc_start"] = pacs.start()
    listener = Listener(args.bundle, args.out)
    try:
        report["timings_s"]["listener_start"] = listener.start()
        report["refused"] = refused(pacs, listener, args.refused)
        report["roundtrip"] = roundtrip(pacs, listener, args.mammogram, args.out)
        report["kill"] = killed(pacs, listener, args.kill_batch)
        report["down"] = destination_down(pacs, listener, args.down_batch)
        report["refused"]["study_at_end"] = pacs.study_classes(report["refused"]["study_id"])
        report["dead_lettered"] = listener.metric("deepminer_dimse_dead_letter_depth")
        report["final"] = listener.state()
        report["receipts"] = pacs.receipts()
    finally:
        if listener.runs:
            listener.process.terminate()
            report["listener_exit"] = listener.process.wait(timeout=60)
        if pacs.process is not None and pacs.process.poll() is None:
            stop(pacs.process)
        (args.out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
