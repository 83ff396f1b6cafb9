"""Soak test: the real service under a few hundred concurrent /explain requests on loopback.

Starts ``python -m service`` on a free loopback port with the bundle given
(nothing is built or downloaded), waits for /readyz, then sends ``--requests``
POST /explain requests, at most ``--concurrency`` at a time (httpx, asyncio),
in ``--rounds`` rounds. It reports the answers by status (and error code),
latency percentiles p50/p95/p99 of the successful answers, throughput, and the server's resident memory
(VmRSS from /proc, the server process plus its children) when ready and after
each round; a leak shows as RSS that keeps growing round after round.

    .venv/bin/python benchmarks/soak.py --bundle bundles/demo
    .venv/bin/python benchmarks/soak.py --bundle bundles/demo --requests 500 --concurrency 32 --rounds 3 \\
        --env DEEPMINER_INFERENCE_WORKERS=2 --json soak.json

The upload is ``--image`` or, by default, a synthetic 16-bit PNG of
``--size`` (rows x columns) made in memory. Requests beyond the service's
``workers + max_queue`` are answered 503 busy by design; raise
DEEPMINER_MAX_QUEUE with ``--env`` to measure queueing instead.
Exit status 1 when any answer is a 5xx other than 503 busy, or a transport error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from serving import percentile, post_explain, rss_kib, start_server, stop_server, synthetic_png, wait_ready


async def one_round(base: str, image: bytes, *, requests: int, concurrency: int, timeout_s: float,
                    params: dict[str, str]) -> tuple[list[float], Counter[str], float]:
    """Send ``requests`` uploads, ``concurrency`` at a time; latencies (s) of the 200 answers, outcomes, wall time."""
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) as client:

        async def one() -> None:
            async with gate:
                answer = await post_explain(client, image, params=params, outcomes=outcomes, filename="soak.png")
                if answer is not None and answer[0].status_code == 200:
                    latencies.append(answer[1])

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return latencies, outcomes, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory the service loads")
    parser.add_argument("--requests", type=int, default=300, help="requests per round (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds; RSS is read after each (default %(default)s)")
    parser.add_argument("--image", type=Path, help="the image to upload (default: a synthetic 16-bit PNG)")
    parser.add_argument("--size", type=int, nargs=2, default=(1600, 1200), metavar=("ROWS", "COLS"),
                        help="size of the synthetic image (default %(default)s)")
    parser.add_argument("--maps", choices=("uint16", "json"), default="uint16", help="?maps= of every request")
    parser.add_argument("--overlays", choices=("none", "png"), default="none", help="?overlays= of every request")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the service, e.g. DEEPMINER_INFERENCE_WORKERS=2 (repeatable)")
    parser.add_argument("--timeout", type=float, default=300.0, help="client timeout per request, s")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not (args.bundle / "meta.json").is_file():
        parser.error(f"--bundle {args.bundle} is not a model bundle (no meta.json)")
    extra_env = dict(item.split("=", 1) for item in args.env)
    image = args.image.read_bytes() if args.image else synthetic_png(*args.size)
    params = {"maps": args.maps, "overlays": args.overlays}

    with tempfile.TemporaryDirectory(prefix="deepminer-soak-") as tmp:
        process, base, log = start_server(args.bundle, Path(tmp), extra_env)
        try:
            ready = wait_ready(process, base, log, timeout_s=300.0)
            rss_ready = rss_kib(process.pid)
            rounds = []
            for index in range(args.rounds):
                latencies, outcomes, wall = asyncio.run(one_round(
                    base, image, requests=args.requests, concurrency=args.concurrency, timeout_s=args.timeout,
                    params=params,
                ))
                ok = latencies
                rounds.append({
                    "round": index + 1,
                    "outcomes": dict(sorted(outcomes.items())),
                    "p50_ms": round(percentile(ok, 50) * 1000, 1),
                    "p95_ms": round(percentile(ok, 95) * 1000, 1),
                    "p99_ms": round(percentile(ok, 99) * 1000, 1),
                    "mean_ms": round(statistics.fmean(ok) * 1000, 1) if ok else None,
                    "wall_s": round(wall, 2),
                    "answers_per_s": round(sum(outcomes.values()) / wall, 2),
                    "ok_per_s": round(outcomes["200"] / wall, 2),
                    "rss_after_mib": round(rss_kib(process.pid) / 1024, 1),
                })
        finally:
            stop_server(process)

    report = {
        "model": ready["model"],
        "image_bytes": len(image),
        "requests_per_round": args.requests,
        "concurrency": args.concurrency,
        "service_env": extra_env,
        "params": params,
        "rss_ready_mib": round(rss_ready / 1024, 1),
        "rounds": rounds,
    }
    print(f"model {ready['model']['id']} on {ready['model']['provider']}; upload {len(image)} bytes; "
          f"{args.requests} requests x {args.rounds} round(s), concurrency {args.concurrency}")
    print(f"RSS when ready: {report['rss_ready_mib']} MiB")
    for r in rounds:
        print(f"round {r['round']}: {r['outcomes']}  p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms  "
              f"p99 {r['p99_ms']} ms  {r['ok_per_s']} ok/s ({r['wall_s']} s)  RSS after {r['rss_after_mib']} MiB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = any(
        key.startswith("transport") or (key[:1] == "5" and key != "503 busy")
        for r in rounds for key in r["outcomes"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
