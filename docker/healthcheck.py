"""Exit 0 when the service answers 200 on a path: the image's HEALTHCHECK and the chart's test pod.

usage: python healthcheck.py [URL]

Without a URL it asks the process the container runs (PID 1): the DICOM
listener (the entrypoint's ``dimse`` verb, ``python -m service.dimse``) at
http://127.0.0.1:$DEEPMINER_DIMSE_METRICS_PORT/healthz (9104), anything else
the API at http://127.0.0.1:$DEEPMINER_PORT/healthz (8000). One image, one
HEALTHCHECK, whichever verb it was started with.

Standard library only, so it works in any image that has the service's Python.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 5.0
PID1_CMDLINE = Path("/proc/1/cmdline")


def default_url(cmdline: Path = PID1_CMDLINE) -> str:
    """The health URL of what ``cmdline`` (NUL-separated arguments) runs: the listener's or the API's."""
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:  # not Linux, or /proc not mounted: the API, as before
        args = []
    if b"service.dimse" in args:
        return f"http://127.0.0.1:{os.environ.get('DEEPMINER_DIMSE_METRICS_PORT', '9104')}/healthz"
    return f"http://127.0.0.1:{os.environ.get('DEEPMINER_PORT', '8000')}/healthz"


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else default_url()
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url} answered {status}", file=sys.stderr)
        return 1
    print(f"healthy: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
