"""The DICOM listener's figures: instances per second received and explained, spool bytes per instance, kill -9.

Starts ``python -m service.dimse`` (benchmarks/serving.py) with the bundle given,
on free loopback ports, and is its SCU (pynetdicom):

1. **Throughput.** ``--instances`` MG For Presentation instances of ``--size``
   (a synthetic 16-bit mammogram, each its own SOP Instance) in one
   association. Received: instances acknowledged (written and fsynced into the
   spool) per second of sending. Explained: instances whose results are
   committed to the outbox per second, from the first send to the last commit.
   The spool's bytes per instance come from its /metrics right after the last
   acknowledgement; the outbox's from its files.
2. **kill -9.** Another batch, SIGKILL right after the last acknowledgement,
   a restart: the counts acknowledged, explained before the kill, and explained
   after the restart, with the keys the outbox journal holds more than once.

Results go by C-STORE to a Storage SCP in this process (pynetdicom, on
loopback), which counts them: delivered per second, and after the kill the
result sets delivered and the results received twice.

    .venv/bin/python benchmarks/dimse.py --bundle bundles/demo
    .venv/bin/python benchmarks/dimse.py --bundle bundles/demo --instances 40 --size 2048x1664
"""

from __future__ import annotations

import argparse
import io
import json
import re
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    DigitalMammographyXRayImageStorageForPresentation,
    Verification,
)
from serving import free_port, start_server, stop_server, synthetic_png

from service.dimse.sender import RESULT_SOP_CLASSES

CALLING, CALLED, DESTINATION = "BENCHSCU", "DEEPMINER", "BENCHPACS"


class Destination:
    """The results' destination: a Storage SCP that counts the SOP Instance UIDs it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: Counter[str] = Counter()
        ae = AE(ae_title=DESTINATION)
        for sop_class in RESULT_SOP_CLASSES:
            ae.add_supported_context(sop_class)
        handlers = [(evt.EVT_C_STORE, self._store)]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def _store(self, event: Event) -> int:
        self.received[str(event.request.AffectedSOPInstanceUID)] += 1
        return 0x0000


def mammogram(pixels: np.ndarray) -> Dataset:
    """A bare MG For Presentation data set of ``pixels`` in a study of its own."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    ds.SOPInstanceUID = uid.generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid.generate_uid(), uid.generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "MG", "BENCH", "Bench^Phantom"
    ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)
    return ds


class Listener:
    """The listener process and its spool directory."""

    def __init__(self, bundle: Path, workdir: Path, destination: Destination) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.spool = workdir / "spool"
        self.bundle, self.workdir = bundle, workdir
        self.env = {
            "DEEPMINER_DIMSE_AE_TITLE": CALLED,
            "DEEPMINER_DIMSE_PORT": str(self.port),
            "DEEPMINER_DIMSE_METRICS_PORT": str(self.metrics_port),
            "DEEPMINER_DIMSE_ALLOWED_CALLING_AE_TITLES": json.dumps([CALLING]),
            "DEEPMINER_DIMSE_SPOOL_DIR": str(self.spool),
            "DEEPMINER_DIMSE_POLL_S": "0.05",
            "DEEPMINER_DIMSE_DESTINATION_AE_TITLE": DESTINATION,
            "DEEPMINER_DIMSE_DESTINATION_PORT": str(destination.port),
            "DEEPMINER_DIMSE_SEND_BACKOFF_S": "0.2",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 300.0) -> None:
        self.process, _, log = start_server(self.bundle, self.workdir, self.env, module="service.dimse")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the listener exited with {self.process.returncode}:\n{log.read_text()[-3000:]}")
            assoc = scu().associate("127.0.0.1", self.port, ae_title=CALLED)
            if assoc.is_established:
                assoc.release()
                return
            time.sleep(0.3)
        raise SystemExit(f"the listener did not listen within {timeout_s:.0f} s")

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else float("nan")

    def committed(self) -> list[str]:
        journal = self.spool / "outbox" / "journal.jsonl"
        return [json.loads(line)["key"] for line in journal.read_text().splitlines()] if journal.exists() else []

    def delivered(self) -> int:
        return sum(1 for _ in (self.spool / "delivered").iterdir())

    def wait(self, done: Callable[[], int], count: int, what: str, timeout_s: float = 1800.0) -> float:
        """Seconds until ``done()`` reaches ``count``."""
        started = time.perf_counter()
        while done() < count:
            if time.perf_counter() - started > timeout_s:
                raise SystemExit(f"{done()} of {count} {what} within {timeout_s:.0f} s")
            time.sleep(0.05)
        return time.perf_counter() - started


def scu() -> AE:
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(Verification)
    ae.add_requested_context(DigitalMammographyXRayImageStorageForPresentation, uid.ExplicitVRLittleEndian)
    return ae


def send(port: int, batch: list[Dataset]) -> tuple[Counter[str], list[float]]:
    """C-STORE ``batch`` in one association: the statuses, and each acknowledgement's seconds."""
    assoc = scu().associate("127.0.0.1", port, ae_title=CALLED, max_pdu=0)
    if not assoc.is_established:
        raise SystemExit("the listener refused the association")
    statuses: Counter[str] = Counter()
    seconds = []
    try:
        for ds in batch:
            started = time.perf_counter()
            status = assoc.send_c_store(ds)
            seconds.append(time.perf_counter() - started)
            statuses[f"0x{int(status.Status):04X}" if "Status" in status else "no answer"] += 1
    finally:
        assoc.release()
    return statuses, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--instances", type=int, default=20, help="instances of the throughput phase")
    parser.add_argument("--kill-batch", type=int, default=10, help="instances acknowledged before the kill -9")
    parser.add_argument("--size", default="1024x832", help="rows x columns of each mammogram")
    args = parser.parse_args()
    rows, cols = (int(v) for v in args.size.split("x"))
    pixels = np.asarray(Image.open(io.BytesIO(synthetic_png(rows, cols))), dtype=np.uint16)

    with tempfile.TemporaryDirectory(prefix="deepminer-dimse-bench-") as tmp:
        destination = Destination()
        listener = Listener(args.bundle.resolve(), Path(tmp), destination)
        listener.start()
        batch = [mammogram(pixels) for _ in range(args.instances)]
        started = time.perf_counter()
        statuses, seconds = send(listener.port, batch)
        sent_s = time.perf_counter() - started
        depth = listener.metric("deepminer_dimse_spool_depth")
        spool_bytes = listener.metric("deepminer_dimse_spool_bytes")
        explained_s = sent_s + listener.wait(lambda: len(listener.committed()), args.instances, "explained")
        delivered_s = explained_s + listener.wait(listener.delivered, args.instances, "delivered")
        print(f"bundle {args.bundle}, {args.instances} instances of {rows}x{cols} x 16 bit")
        print(f"C-STORE answers: {dict(statuses)}")
        print(f"received: {args.instances / sent_s:.1f} instances/s; acknowledgement median "
              f"{statistics.median(seconds) * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms")
        print(f"explained: {args.instances / explained_s:.2f} instances/s ({explained_s:.1f} s from the first send)")
        if depth > 0:
            print(f"spool: {spool_bytes / depth / 1024:.0f} KiB per waiting instance ({depth:.0f} waiting)")
        print(f"delivered: {args.instances / delivered_s:.2f} instances/s ({delivered_s:.1f} s from the first send); "
              f"{len(destination.received)} results")

        kill_batch = [mammogram(pixels) for _ in range(args.kill_batch)]
        statuses, _ = send(listener.port, kill_batch)
        assert listener.process is not None
        listener.process.send_signal(signal.SIGKILL)
        listener.process.wait()
        before = len(listener.committed()) - args.instances
        listener.start()
        listener.wait(listener.delivered, args.instances + args.kill_batch, "delivered")
        time.sleep(1.0)  # anything explained or sent a second time would show now
        keys = listener.committed()
        twice = [k for k, n in Counter(keys).items() if n > 1]
        print(f"kill -9: acknowledged {statuses.get('0x0000', 0)} of {args.kill_batch}; explained before the kill "
              f"{before}, after the restart {len(keys) - args.instances - before}; explained twice: {len(twice)}; "
              f"delivered {listener.delivered() - args.instances} result sets; results received twice: "
              f"{sum(1 for n in destination.received.values() if n > 1)}")
        assert listener.process is not None
        stop_server(listener.process)
        destination.server.shutdown()


if __name__ == "__main__":
    main()
