"""Ingest rate of the embedded collector: Zipkin v2 JSON spans/s and spans per collector CPU-second.

    python bench/collector_ingest.py [--quick] [--spans N] [--connections C] [--batch-sizes 5,100]

Starts `python -m loadgen.stack.collector --port 0 --data-dir TMP` (fresh per batch size, stopped by
PID), pre-builds Envoy-shaped spans (the 3 spans per request the embedded mesh really sends:
gateway SERVER + CLIENT, sidecar SERVER, with Envoy's tags; every span unique) serialized as POST
bodies of 5 spans (Envoy's default min_flush_spans) and of 100, then POSTs all of them from this
process (a separate client process from the collector) over C concurrent keep-alive connections
(aiohttp). Collector CPU comes from /proc/PID/stat (utime + stime) deltas.

Baseline: the span output of one Envoy gateway at 100 % sampling, taken from shared/ENVOY-NOTES.md
("Cost": ~6k req/s on this machine at best x 3 spans per request = 18k spans/s). The ratio says how
many such gateways one collector core keeps up with.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from _common import (
    Collector,
    banner,
    envoy_trace,
    footer,
    print_table,
    proc_cpu_s,
    ratio_line,
    self_cpu_s,
)

ENVOY_REQ_PER_S = 6000.0  # ENVOY-NOTES "Cost": gateway at 100 % sampling, ~4.7-6.2k req/s
SPANS_PER_REQUEST = 3  # gateway SERVER + gateway CLIENT + sidecar SERVER
ENVOY_SPANS_PER_S = ENVOY_REQ_PER_S * SPANS_PER_REQUEST
GOAL_SPANS_PER_CPU_S = 50_000.0


def build_bodies(total_spans: int, batch_size: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    ts = int(time.time() * 1e6)
    spans: list[dict[str, object]] = []
    while len(spans) < total_spans:
        spans.extend(envoy_trace(rng, ts))
        ts += 150
    spans = spans[:total_spans]
    return [
        json.dumps(spans[i : i + batch_size], separators=(",", ":")).encode()
        for i in range(0, len(spans), batch_size)
    ]


async def post_all(
    url: str, bodies: list[bytes], batch_size: int, connections: int
) -> tuple[int, int, float]:
    """POST every body; returns (spans acknowledged with 202, non-202 answers, wall seconds)."""
    endpoint = f"{url}/api/v2/spans"
    queue = iter(bodies)
    ok_spans = 0
    bad = 0
    headers = {"Content-Type": "application/json"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok_spans, bad
        for body in queue:  # the shared iterator hands each body to exactly one worker
            async with session.post(endpoint, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 202:
                    ok_spans += body.count(b'"traceId"')
                else:
                    bad += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm the connections so connection set-up is not in the measurement.
        await asyncio.gather(*(session.get(f"{url}/health") for _ in range(connections)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        wall = time.perf_counter() - t0
    return ok_spans, bad, wall


def measure(batch_size: int, total_spans: int, connections: int, tmp: Path) -> list[object]:
    bodies = build_bodies(total_spans, batch_size, seed=batch_size)
    mean_bytes = sum(len(b) for b in bodies) / len(bodies)
    workdir = tmp / f"batch{batch_size}"
    (workdir / "data").mkdir(parents=True)
    with Collector(workdir / "data") as collector:
        cpu0, client0 = proc_cpu_s(collector.pid), self_cpu_s()
        ok_spans, bad, wall = asyncio.run(post_all(collector.url, bodies, batch_size, connections))
        cpu = proc_cpu_s(collector.pid) - cpu0
        client_cpu = self_cpu_s() - client0
        import urllib.request

        with urllib.request.urlopen(f"{collector.url}/loadgen/stats") as resp:
            stats = json.load(resp)
    if stats["spans_accepted"] != ok_spans or bad:
        print(
            f"   ! collector accepted {stats['spans_accepted']} spans, client saw {ok_spans} acknowledged, "
            f"{bad} non-202 answers",
            file=sys.stderr,
        )
    rate = ok_spans / wall
    per_cpu_s = ok_spans / cpu if cpu > 0 else 0.0
    return [
        batch_size,
        len(bodies),
        round(mean_bytes),
        ok_spans,
        stats["spans_accepted"],
        bad,
        wall,
        rate,
        100.0 * cpu / wall,
        per_cpu_s,
        100.0 * client_cpu / wall,
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds, tiny sizes (smoke test)")
    p.add_argument("--spans", type=int, default=200_000, help="spans POSTed per batch size (default 200000)")
    p.add_argument("--connections", type=int, default=4, help="concurrent connections (default 4)")
    p.add_argument("--batch-sizes", default="5,100", help="spans per POST (default 5,100)")
    args = p.parse_args()
    if args.quick:
        args.spans = 3000
    sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    banner(
        f"collector ingest: {args.spans:,} Envoy-shaped spans per batch size, {args.connections} connections",
        args.quick,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        for size in sizes:
            rows.append(measure(size, args.spans, args.connections, Path(tmp)))
    print_table(
        [
            "spans/POST",
            "POSTs",
            "bytes/POST",
            "spans 202'd",
            "spans stored",
            "non-202",
            "wall s",
            "spans/s",
            "collector CPU %",
            "spans/collector CPU-s",
            "client CPU %",
        ],
        rows,
    )
    print(
        f"   baseline: Envoy gateway span output at 100 % sampling = {ENVOY_REQ_PER_S:,.0f} req/s x "
        f"{SPANS_PER_REQUEST} spans = {ENVOY_SPANS_PER_S:,.0f} spans/s (shared/ENVOY-NOTES.md, 'Cost')"
    )
    print()
    for row in rows:
        size, rate, per_cpu = row[0], float(row[7]), float(row[9])
        ratio_line(
            f"collector spans per CPU-second / {GOAL_SPANS_PER_CPU_S:,.0f} goal @ {size} spans/POST",
            per_cpu / GOAL_SPANS_PER_CPU_S,
            ">=",
            1.0,
            f"({per_cpu:,.0f} spans per collector CPU-s)",
        )
        ratio_line(
            f"collector spans per CPU-second / Envoy max span output @ {size} spans/POST",
            per_cpu / ENVOY_SPANS_PER_S,
            note=f"(wall rate {rate:,.0f} spans/s = {rate / ENVOY_SPANS_PER_S:.3f} x Envoy)",
        )
    footer()
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)
