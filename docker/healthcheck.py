"""Exit 0 when the service answers 200 on a path: the image's HEALTHCHECK and the chart's test pod.

usage: python healthcheck.py [URL]   (default http://127.0.0.1:$DEEPMINER_PORT/healthz)

Standard library only, so it works in any image that has the service's Python.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 5.0


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else f"http://127.0.0.1:{os.environ.get('DEEPMINER_PORT', '8000')}/healthz"
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
