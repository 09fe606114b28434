"""Regenerate docs/img/watch-status.png: the `loadgen watch` status page of a realistic snapshot.

    .venv/bin/python docs/img/make_watch_screenshot.py [--out docs/img/watch-status.png]

The snapshot is simulated (a fixed seed, no mesh): a watch that has run for a day at ~2 req/s
with 10 % sampling and ~1 reference trace/s, its last hour kept in 10 s buckets and turned into
the 5 min and 1 h windows by loadgen.watch.windows, as the runner does. The page is served by
loadgen.watch.server on a free loopback port and shot with `chromium --headless --screenshot`
(Debian's chromium package); the browser runs in a throwaway profile and is waited for.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from loadgen import __version__
from loadgen.watch.model import TTQ_BUCKETS_S, Histogram, Source, WatchSnapshot
from loadgen.watch.server import WatchServer
from loadgen.watch.windows import Bucket, parse_windows, window_stats

NOW = 1_765_000_000.0
BUCKET_S = 10.0
SAMPLING = 0.10


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def simulate_buckets(rng: random.Random) -> list[Bucket]:
    """The last hour in 10 s buckets: ~12 no-header requests decided by the mesh per bucket, ~1 %
    of sampled mesh traces missing, reference traces 99.9 % found."""
    buckets = []
    for i in range(360):
        decided = rng.randint(10, 14)
        sampled = _binomial(rng, decided, SAMPLING)
        found = _binomial(rng, sampled, 0.99)
        ref_found = _binomial(rng, 10, 0.999)
        outcomes = {
            (Source.MESH, "found"): found,
            (Source.MESH, "missing"): sampled - found,
            (Source.MESH, "not_sampled"): decided - sampled,
            (Source.REFERENCE, "found"): ref_found,
            (Source.REFERENCE, "missing"): 10 - ref_found,
        }
        buckets.append(Bucket(NOW - 3600.0 + i * BUCKET_S, decided, sampled, outcomes))
    return buckets


def ttq_histogram(rng: random.Random, count: int) -> Histogram:
    """Time to queryable: lognormal around 0.8 s, a slow tail."""
    samples = [rng.lognormvariate(math.log(0.8), 0.55) for _ in range(count)]
    cumulative = tuple(sum(s <= bound for s in samples) for bound in TTQ_BUCKETS_S) + (count,)
    return Histogram(bucket_counts=cumulative, sum_s=sum(samples), count=count)


def realistic_snapshot(seed: int = 14) -> WatchSnapshot:
    rng = random.Random(seed)
    buckets = simulate_buckets(rng)
    windows = tuple(window_stats(buckets, NOW, seconds, label) for label, seconds in parse_windows("5m,1h"))
    return WatchSnapshot(
        run_id="watch-7f3a9c",
        version=__version__,
        started_at=NOW - 26 * 3600.0,
        now=NOW,
        configured_ratio=SAMPLING,
        requests={("no-headers", "200"): 112_214, ("sampled", "200"): 37_391, ("not-sampled", "200"): 37_402},
        traces={
            (Source.MESH, "no-headers", "found"): 11_109,
            (Source.MESH, "no-headers", "missing"): 98,
            (Source.MESH, "no-headers", "not_sampled"): 100_995,
            (Source.MESH, "sampled", "found"): 37_021,
            (Source.MESH, "sampled", "missing"): 341,
            (Source.MESH, "sampled", "unknown"): 29,
            (Source.MESH, "not-sampled", "not_sampled"): 37_402,
            (Source.REFERENCE, "reference", "found"): 93_490,
            (Source.REFERENCE, "reference", "missing"): 71,
            (Source.REFERENCE, "reference", "unknown"): 39,
        },
        reference={"started": 93_612, "exported": 93_600, "failed": 12, "dropped": 0},
        pending={Source.MESH: 14, Source.REFERENCE: 9},
        windows=windows,
        ttq={Source.MESH: ttq_histogram(rng, 4000), Source.REFERENCE: ttq_histogram(rng, 4000)},
        last_readback_success=NOW - 1.2,
        profile={
            "tracer": "zipkin",
            "spans_per_trace": "3",
            "edge": "gateway",
            "run_id_tag": "yes",
            "source": "probe",
        },
        errors={"backend": 1},
        notes=("queried once the 5 s queryable deadline has passed, retried until 60 s",),
    )


def find_chromium() -> str:
    for candidate in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(candidate)
        if found:
            return found
    sys.exit("error: chromium not found (apt-get install -y chromium)")


def shoot(url: str, out: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory(prefix="watch-shot-") as profile:
        argv = [
            find_chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            url,
        ]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("watch-status.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1470)
    args = parser.parse_args()
    snapshot = realistic_snapshot()
    with WatchServer(lambda: snapshot, port=0, clock=lambda: NOW) as server:
        shoot(server.url, args.out.resolve(), args.width, args.height)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
