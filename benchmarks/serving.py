"""What the service benchmarks share: start ``python -m service`` on loopback, wait for it, read its memory.

Used by :mod:`soak`, :mod:`perf` and :mod:`dimse`; run those, not this.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and all its descendants, in KiB (0 for processes that are gone)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def synthetic_png(rows: int, cols: int, seed: int = 0) -> bytes:
    """A mammogram-sized 16-bit PNG: a bright half-ellipse on black with smooth texture and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    breast = ((y - rows / 2) / (rows * 0.48)) ** 2 + (x / (cols * 0.85)) ** 2 < 1.0
    coarse = rng.random((rows // 64 + 2, cols // 64 + 2)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse).resize((cols, rows), Image.Resampling.BICUBIC), dtype=np.float32)
    image = breast * (0.45 + 0.3 * texture + rng.normal(0, 0.02, (rows, cols)).astype(np.float32))
    buf = io.BytesIO()
    Image.fromarray(np.clip(image * 65535, 0, 65535).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def start_server(
    bundle: Path, workdir: Path, extra_env: dict[str, str], *, module: str = "service"
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``python -m <module>`` (the service, or the DICOM listener ``service.dimse``) in ``workdir``, logging there."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEEPMINER_")},
        "DEEPMINER_HOST": "127.0.0.1",
        "DEEPMINER_PORT": str(port),
        "DEEPMINER_BUNDLE": str(bundle.resolve()),
        "DEEPMINER_DATABASE_URL": f"sqlite:///{workdir / 'labels.db'}",
        "DEEPMINER_LOG_LEVEL": "warning",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **extra_env,
    }
    log = workdir / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", module], cwd=workdir, env=env, stdout=sink,
                                   stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}", log


def wait_ready(
    process: subprocess.Popen[bytes], base: str, log: Path, timeout_s: float, poll_s: float = 0.5
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{base}/readyz", timeout=2.0)
            if response.status_code == 200:
                ready: dict[str, Any] = response.json()
                return ready
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    raise SystemExit(f"the service was not ready within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


async def post_explain(
    client: httpx.AsyncClient, upload: bytes, *, params: dict[str, str], outcomes: Counter[str],
    filename: str = "mammogram.png",
) -> tuple[httpx.Response, float] | None:
    """POST one upload to /explain and count its outcome in ``outcomes``.

    Outcomes: ``"200"``, ``"<status> <error code>"``, or ``"transport:<exception>"`` (then None is returned);
    otherwise the response and its seconds.
    """
    started = time.perf_counter()
    try:
        response = await client.post("/explain", files={"file": (filename, upload)}, params=params)
    except httpx.TransportError as exc:
        outcomes[f"transport:{type(exc).__name__}"] += 1
        return None
    elapsed = time.perf_counter() - started
    if response.status_code == 200:
        outcomes["200"] += 1
    else:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "?"
        outcomes[f"{response.status_code} {code}"] += 1
    return response, elapsed


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
