"""Read-back against a rate-limited backend: fixed concurrency 4, fixed 32, and the adaptive limit.

    python bench/readback_adaptive.py [--quick] [--ids N] [--rate R]

Starts a Tempo-shaped stand-in backend in a child process (this script with `--serve`, on
127.0.0.1, stopped by PID). Its rules, per `GET /api/v2/traces/{id}`:

  rate limit  a token bucket of R tokens/s (default 300), BURST (20) deep: a request that finds
              it empty is answered `429` with `Retry-After: 1` at once (the reader waits 1 s
              before that request's retry, as it must);
  latency     an admitted request is answered after BASE_MS + PER_IN_FLIGHT_MS x (requests being
              answered, itself included) = 20 + 1 x n ms: more in flight is slower, as a querier
              with a queue is;
  answer      Tempo's not-found answer (404, no body): the reader's MISSING, so the figure is the
              query rate, not span decoding.

A TempoBackend (one GET per id) reads the same N ids (default 3000) three times, the bucket
full at each start: `--backend-fixed-concurrency` at 4 (the default start) and at 32 (the
default adaptive bound), then adaptive (starts at 4, bound 32). Printed per reader: seconds,
requests, 429s, QueryStats.qps (requests / seconds inside the fetch) and the limits used; then

  ratio adaptive qps / fixed-4 qps = X       (> 1: the adaptive limit found the room above 4)
  ratio adaptive 429s / fixed-32 429s = X    (< 1: it stays below the rate limit)

At 20 + n ms per answer, fixed 4 asks at most ~4 / 24 ms = 167/s, under the bucket's rate; fixed
32 asks up to ~32 / 52 ms = 615/s, twice the rate, and meets 429s all along.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import banner, footer, print_table, ratio_line, stop_pid

from loadgen.backends import FetchStatus, QueryStats, TempoBackend

BURST = 20
BASE_MS = 20.0
PER_IN_FLIGHT_MS = 1.0
RETRY_AFTER_S = "1"


# --- the stand-in (child process) ------------------------------------------------------------------


class Bucket:
    """A token bucket: `rate` tokens per second, at most `depth`."""

    def __init__(self, rate: float, depth: int) -> None:
        self.rate, self.depth = rate, depth
        self.reset()

    def reset(self) -> None:
        self.tokens = float(self.depth)
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.depth, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def serve(rate: float) -> None:
    from aiohttp import web

    bucket = Bucket(rate, BURST)
    counts = {"in_flight": 0, "answered": 0, "throttled": 0}

    async def trace(_request: web.Request) -> web.Response:
        if not bucket.take():
            counts["throttled"] += 1
            return web.Response(status=429, text="rate limited", headers={"Retry-After": RETRY_AFTER_S})
        counts["in_flight"] += 1
        try:
            await asyncio.sleep((BASE_MS + PER_IN_FLIGHT_MS * counts["in_flight"]) / 1000.0)
        finally:
            counts["in_flight"] -= 1
        counts["answered"] += 1
        return web.Response(status=404)  # Tempo's not-found answer: no body

    async def reset(_request: web.Request) -> web.Response:
        bucket.reset()
        counts.update(answered=0, throttled=0)
        return web.json_response(counts)

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(counts)

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/v2/traces/{tid}", trace)
        app.router.add_get("/reset", reset)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        print(json.dumps({"url": f"http://127.0.0.1:{port}"}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# --- the bench -------------------------------------------------------------------------------------


def read(url: str, ids: list[str], **options: Any) -> tuple[float, QueryStats, dict[str, int]]:
    """(seconds, the reader's QueryStats, the stand-in's counts) for one read of every id."""
    httpx.get(f"{url}/reset", timeout=5).raise_for_status()
    with TempoBackend(url, retries=20, timeout_s=10.0, **options) as backend:
        t0 = time.perf_counter()
        out = backend.fetch_many(ids)
        seconds = time.perf_counter() - t0
        stats = backend.query_stats()
    unanswered = sum(1 for f in out.values() if f.status is not FetchStatus.MISSING)
    if unanswered:
        print(f"   ! {unanswered} ids not answered: {next(iter(out.values())).error}", file=sys.stderr)
    served: dict[str, int] = httpx.get(f"{url}/stats", timeout=5).json()
    return seconds, stats, served


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds, tiny sizes (smoke test)")
    p.add_argument("--ids", type=int, default=3000, help="trace ids read per reader (default 3000)")
    p.add_argument("--rate", type=float, default=300.0, help="the stand-in's rate limit, req/s (default 300)")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args.rate)
        return 0
    if args.quick:
        args.ids = 300
    banner(
        f"read-back against a rate-limited stand-in ({args.rate:g} req/s, burst {BURST}, "
        f"{BASE_MS:g} + {PER_IN_FLIGHT_MS:g} ms per request in flight): {args.ids:,} ids per reader",
        args.quick,
    )
    ids = [f"{n + 1:032x}" for n in range(args.ids)]
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--rate", str(args.rate)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        url = json.loads(child.stdout.readline())["url"]
        readers: list[tuple[str, dict[str, Any]]] = [
            ("fixed 4", {"concurrency": 4, "adaptive": False}),
            ("fixed 32", {"concurrency": 32, "adaptive": False}),
            ("adaptive 4..32", {"concurrency": 4, "max_concurrency": 32}),
        ]
        results = {name: read(url, ids, **options) for name, options in readers}
    finally:
        stop_pid(child.pid)
        if child.stdout is not None:
            child.stdout.close()
    rows = []
    for name, (seconds, stats, served) in results.items():
        if stats.requests != served["answered"] + served["throttled"]:
            print(f"   ! {name}: {stats.requests} requests counted, {served} served", file=sys.stderr)
        rows.append([
            name, seconds, stats.requests, stats.throttled, stats.qps, args.ids / seconds,
            stats.lowest_concurrency, stats.highest_concurrency, stats.concurrency,
        ])  # fmt: skip
    print_table(
        ["reader", "seconds", "requests", "429s", "qps", "ids/s", "lowest", "highest", "final limit"], rows
    )
    print()
    fixed4, fixed32, adaptive = (results[name][1] for name, _ in readers)
    ratio_line(
        "adaptive qps / fixed-4 qps",
        adaptive.qps / fixed4.qps if adaptive.qps and fixed4.qps else None,
        ">=",
        1.2,
    )
    ratio_line(
        "adaptive 429s / fixed-32 429s",
        adaptive.throttled / fixed32.throttled if fixed32.throttled else None,
        "<=",
        0.5,
    )
    footer()
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    if "--serve" not in sys.argv:
        print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)
