"""Collector memory under steady ingest: the span store is on disk, so RSS must stay flat however
long the collector runs.

    python bench/collector_soak.py                    # 60 s at 300 POSTs/s of 5 Envoy-shaped spans
    python bench/collector_soak.py --quick            # 8 s, for the smoke test
    python bench/collector_soak.py --duration 600 --rate 300

Starts `python -m loadgen.stack.collector --port 0 --data-dir TMP` (stopped by PID), POSTs bodies of
`--batch` unique Envoy-shaped spans (the 3 spans per request the embedded mesh sends) at a steady
`--rate` over 4 keep-alive connections, and samples the collector's RSS (/proc/PID/status VmRSS)
every second. Prints the RSS at start, after warm-up (the first quarter of the run), in the middle
and at the end, the slope after warm-up (least squares, MB/min), and the ratio of the final RSS to
the RSS after warm-up (goal: <= 1.10, flat within 10 %). Issue 10 measured the JSON-lines store
growing ~2.4 MB/s at 300 req/s.
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
from _common import Collector, banner, envoy_trace, footer, print_table, proc_cpu_s, ratio_line

GOAL_RATIO = 1.10


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def slope_mib_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    cov = sum((t - mt) * (r - mr) for t, r in samples)
    return 60.0 * cov / var if var > 0 else 0.0


class Spans:
    """Endless unique Envoy-shaped spans, `batch` per body."""

    def __init__(self, batch: int, seed: int = 1) -> None:
        self.batch = batch
        self.rng = random.Random(seed)
        self.ts = int(time.time() * 1e6)
        self.pending: list[dict[str, object]] = []

    def body(self) -> bytes:
        while len(self.pending) < self.batch:
            self.pending.extend(envoy_trace(self.rng, self.ts, run_id="soak"))
            self.ts += 150
        spans, self.pending = self.pending[: self.batch], self.pending[self.batch :]
        return json.dumps(spans, separators=(",", ":")).encode()


async def drive(
    url: str, pid: int, duration_s: float, rate: float, batch: int
) -> tuple[list[tuple[float, float]], int, int, float]:
    """POST at `rate` bodies/s for `duration_s`; returns (RSS samples, 202s, other answers, collector CPU s)."""
    spans = Spans(batch)
    endpoint = f"{url}/api/v2/spans"
    headers = {"Content-Type": "application/json"}
    samples: list[tuple[float, float]] = []
    ok = bad = 0
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok, bad
        while (body := await queue.get()) is not None:
            async with session.post(endpoint, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 202:
                    ok += 1
                else:
                    bad += 1

    async def sampler(t0: float) -> None:
        while True:
            samples.append((time.monotonic() - t0, rss_mib(pid)))
            await asyncio.sleep(1.0)

    connector = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(connector=connector) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(4)]
        t0 = time.monotonic()
        cpu0 = proc_cpu_s(pid)
        sampling = asyncio.create_task(sampler(t0))
        sent = 0
        while (elapsed := time.monotonic() - t0) < duration_s:
            due = int(elapsed * rate) + 1
            while sent < due:
                await queue.put(spans.body())
                sent += 1
            await asyncio.sleep(max(0.0, (sent / rate) - (time.monotonic() - t0)))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        cpu = proc_cpu_s(pid) - cpu0
        sampling.cancel()
        samples.append((time.monotonic() - t0, rss_mib(pid)))
    return samples, ok, bad, cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="8 s (smoke test; the figure means little)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic (default 60)")
    p.add_argument("--rate", type=float, default=300.0, help="POSTs per second (default 300)")
    p.add_argument("--batch", type=int, default=5, help="spans per POST (default 5, Envoy's batch)")
    args = p.parse_args()
    if args.quick:
        args.duration = 8.0
    banner(
        f"collector soak: {args.duration:g} s at {args.rate:g} POSTs/s x {args.batch} spans "
        f"({args.rate * args.batch:,.0f} spans/s)",
        args.quick,
    )
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        with Collector(data) as collector:
            rss0 = rss_mib(collector.pid)
            samples, ok, bad, cpu = asyncio.run(
                drive(collector.url, collector.pid, args.duration, args.rate, args.batch)
            )
        store_mib = sum(f.stat().st_size for f in data.iterdir() if f.is_file()) / 2**20
    warm = [s for s in samples if s[0] >= args.duration / 4]
    warm_rss = warm[0][1] if warm else samples[0][1]
    mid = min(samples, key=lambda s: abs(s[0] - args.duration / 2))
    end = samples[-1]
    slope = slope_mib_per_min(warm)
    print_table(
        ["point", "t s", "collector RSS MiB"],
        [
            ["start (idle)", 0.0, rss0],
            ["after warm-up", warm[0][0] if warm else 0.0, warm_rss],
            ["middle", mid[0], mid[1]],
            ["end", end[0], end[1]],
        ],
    )
    wall = end[0]
    print(
        f"   {ok:,} POSTs answered 202 ({ok * args.batch:,} spans, {ok / wall:,.0f} POSTs/s), {bad} other answers; "
        f"collector CPU {100 * cpu / wall:.0f} %; store on disk {store_mib:.1f} MiB"
    )
    print(f"   RSS slope after warm-up: {slope:+.2f} MiB/min ({slope * 10:+.1f} MiB per 10 minutes)")
    print()
    ratio_line(
        "collector RSS end / after warm-up",
        end[1] / warm_rss,
        "<=",
        GOAL_RATIO,
        f"({warm_rss:.1f} -> {end[1]:.1f} MiB, slope {slope:+.2f} MiB/min)",
    )
    footer()
    return 1 if bad else 0


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)
