"""Read-back + reconciliation of 100k traces: batched traceMany vs one GET per trace.

    python bench/reconcile.py [--quick] [--traces N] [--subset K] [--ledger {file,dicts}]

Starts the embedded collector (`python -m loadgen.stack.collector`, stopped by PID), writes N
Envoy-shaped 3-span traces into it by POST in big batches, builds a synthetic ledger with one
decided-sampled request per trace (the header-mode mix, Envoy x-request-ids), then times:

  batched   `loadgen.readback.read_back` over a `ZipkinBackend(url)` (GET /api/v2/traceMany, 100
            ids per request, 4 in flight - the defaults `loadgen run` uses; the fetch and the
            reduction of every trace to its TraceObservation, as `loadgen run` reads back) +
            `loadgen.analysis.reconcile.reconcile_mesh(ledger, observations, expectation)`, the
            ledger read as `loadgen run` reads it (--ledger file, the default: written to a
            ledger.jsonl by `loadgen.ledger.LedgerWriter` before timing, then
            `read_rows` + `fold_ledger` timed with the reconcile), or handed over as the list of
            record dicts it was built as (--ledger dicts, how this bench measured before)
  per-trace the same reader with batch_size=1, i.e. one `GET /api/v2/trace/{id}` per trace, on a
            random subset of K ids, EXTRAPOLATED linearly to N (plus the same reconcile time)
  memory    the batched read-back once more under tracemalloc: its peak of Python allocations
            (raw answers, decoded spans, observations) per trace, and what stays allocated per
            trace afterwards (the observations). Timed runs are not traced.

and checks that reconcile_mesh found every trace complete.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from _common import (
    GATEWAY_SERVICE,
    SIDECAR_SERVICE,
    Collector,
    banner,
    envoy_trace,
    footer,
    print_table,
    ratio_line,
)

from loadgen.analysis.ledgerfold import fold_ledger
from loadgen.analysis.reconcile import Expectation, TraceObservation, reconcile_mesh
from loadgen.backends.zipkin import ZipkinBackend
from loadgen.ledger import LedgerWriter, read_rows
from loadgen.mesh.encode import encode
from loadgen.mesh.modes import DEFAULT_MIX
from loadgen.readback import read_back

RUN_ID = "bench-reconcile"
RUN_ID_TAG = "loadgen.run_id"
TRACES_PER_POST = 1000


async def load_traces(url: str, n: int, seed: int) -> list[str]:
    """POST n 3-span traces in batches of TRACES_PER_POST; return their trace ids."""
    rng = random.Random(seed)
    ts = int(time.time() * 1e6) - 600_000_000
    ids: list[str] = []
    bodies: list[bytes] = []
    for start in range(0, n, TRACES_PER_POST):
        spans: list[dict[str, Any]] = []
        for _ in range(min(TRACES_PER_POST, n - start)):
            trace = envoy_trace(rng, ts, RUN_ID)
            ids.append(trace[0]["traceId"])
            spans.extend(trace)
            ts += 200
        bodies.append(json.dumps(spans, separators=(",", ":")).encode())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2)) as session:

        async def post(body: bytes) -> None:
            async with session.post(
                f"{url}/api/v2/spans", data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                if resp.status != 202:
                    raise RuntimeError(f"collector answered {resp.status}: {await resp.text()}")

        queue = iter(bodies)

        async def worker() -> None:
            for body in queue:
                await post(body)

        await asyncio.gather(worker(), worker())
    return ids


def synthetic_ledger(ids: list[str], seed: int) -> list[dict[str, Any]]:
    """One 200 request per trace, decided sampled, as TracedUser writes it (see loadgen/ledger.py)."""
    rng = random.Random(seed)
    modes = [m for m, w in DEFAULT_MIX.items() if w > 0 and "not_sampled" not in m.value]
    weights = [DEFAULT_MIX[m] for m in modes]
    records = []
    ts = time.time() - 600
    for seq, tid in enumerate(ids):
        mode = rng.choices(modes, weights)[0]
        inj = encode(mode, rng)
        # The 14th character of x-request-id is Envoy's trace reason: 9 = sampled.
        xrid = str(uuid.UUID(int=rng.getrandbits(128)))
        xrid = xrid[:14] + "9" + xrid[15:]
        records.append({
            "seq": seq, "rid": uuid.UUID(int=rng.getrandbits(128)).hex, "mode": mode.value, "ts": ts,
            "latency_ms": round(rng.uniform(1.0, 12.0), 3), "status": 200, "error": None,
            "inj_trace": tid if inj.trace_id else None, "inj_span": inj.span_id, "inj_flag": inj.flag,
            "up_trace": tid, "up_span": format(rng.getrandbits(64), "016x"),
            "up_flag": "1", "up_xrid": xrid, "worker": "bench:1",
        })  # fmt: skip
        ts += 0.0005
    return records


def write_ledger(path: Path, records: list[dict[str, Any]]) -> Path:
    """The records as `loadgen run`'s workers write them (LedgerWriter numbers them from 0)."""
    with LedgerWriter(path, worker="bench:1") as writer:
        for record in records:
            writer.append(dict(record))
    return path


def reconcile_ledger(
    ledger: list[dict[str, Any]] | Path, observations: dict[str, TraceObservation], expect: Expectation
) -> dict[str, Any]:
    """`reconcile_mesh` of the ledger: a file read and folded as `loadgen run` does
    (loadgen/run/readback.py `_read_run_logs`), or the list of record dicts."""
    if isinstance(ledger, Path):
        fold = fold_ledger(
            read_rows(ledger), percent=expect.configured_percent, tracer=expect.mode_context().tracer
        )
        return reconcile_mesh(fold, observations, expect)
    return reconcile_mesh(ledger, observations, expect)


def _read_back(url: str, ids: list[str], batch_size: int) -> dict[str, TraceObservation]:
    """Every id read back once, as `loadgen run` does (two polls: the second finds none pending)."""
    with ZipkinBackend(url, batch_size=batch_size) as backend:
        result = read_back(
            backend, dict.fromkeys(ids, 3), quiet_s=0.0, poll_interval_s=0.0, max_wait_s=600.0,
            run_id_tag=RUN_ID_TAG, run_id=RUN_ID,
        )  # fmt: skip
    return result.observations


def fetch_and_reconcile(
    url: str, ids: list[str], ledger: list[dict[str, Any]] | Path, batch_size: int, expect: Expectation
) -> tuple[float, float, dict[str, Any]]:
    """(read-back seconds: fetch + observations, reconcile seconds, summary)."""
    t0 = time.perf_counter()
    observations = _read_back(url, ids, batch_size)
    t1 = time.perf_counter()
    summary = reconcile_ledger(ledger, observations, expect)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, summary


def readback_memory(url: str, ids: list[str]) -> tuple[float, float]:
    """(peak, retained) bytes of Python allocations per trace for one batched read-back."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        observations = _read_back(url, ids, 100)
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(observations) == len(ids)
    return (peak - before) / len(ids), (retained - before) / len(ids)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds, tiny sizes (smoke test)")
    p.add_argument("--traces", type=int, default=100_000, help="traces in the collector (default 100000)")
    p.add_argument("--subset", type=int, default=2000, help="ids read one GET each (default 2000)")
    p.add_argument(
        "--ledger",
        choices=("file", "dicts"),
        default="file",
        help="reconcile a ledger.jsonl read as `loadgen run` reads it (default), or a list of dicts",
    )
    args = p.parse_args()
    if args.quick:
        args.traces, args.subset = 2000, 200
    args.subset = min(args.subset, args.traces)
    banner(
        f"read-back + reconcile: {args.traces:,} traces, per-trace baseline on {args.subset:,} ids",
        args.quick,
    )
    expect = Expectation(
        spans_per_trace=3, services=(GATEWAY_SERVICE, SIDECAR_SERVICE), configured_percent=100.0
    )
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        (Path(tmp) / "data").mkdir()
        with Collector(Path(tmp) / "data") as collector:
            t0 = time.perf_counter()
            ids = asyncio.run(load_traces(collector.url, args.traces, seed=1))
            load_s = time.perf_counter() - t0
            records = synthetic_ledger(ids, seed=2)
            print(f"   loaded {len(ids):,} traces ({3 * len(ids):,} spans) in {load_s:.1f} s")

            subset = random.Random(3).sample(ids, args.subset)
            sub_records = [r for r in records if r["up_trace"] in set(subset)]
            ledger: list[dict[str, Any]] | Path = records
            sub_ledger: list[dict[str, Any]] | Path = sub_records
            if args.ledger == "file":
                ledger = write_ledger(Path(tmp) / "run" / "ledger.jsonl", records)
                sub_ledger = write_ledger(Path(tmp) / "sub" / "ledger.jsonl", sub_records)
                print("   reconcile: ledger.jsonl read with read_rows + fold_ledger, as `loadgen run` does")
            else:
                print("   reconcile: the ledger handed to reconcile_mesh as a list of record dicts")
            # Per-trace first (cold), batched second: any warm-up favours the batched figure less.
            one_fetch_s, one_rec_s, one_summary = fetch_and_reconcile(
                collector.url, subset, sub_ledger, 1, expect
            )
            fetch_s, rec_s, summary = fetch_and_reconcile(collector.url, ids, ledger, 100, expect)
            peak_per_trace, kept_per_trace = readback_memory(collector.url, ids)

    found = summary["mesh"]["collection"]["k"]
    sub_found = one_summary["mesh"]["collection"]["k"]
    scale = len(ids) / len(subset)
    one_fetch_extrap = one_fetch_s * scale
    batched_total = fetch_s + rec_s
    one_total = one_fetch_extrap + rec_s
    print_table(
        [
            "method",
            "ids",
            "HTTP requests",
            "read-back s",
            "reconcile s",
            "total s",
            "traces/s",
            "found complete",
        ],
        [
            [
                "batched traceMany (100/request)",
                len(ids),
                -(-len(ids) // 100),
                fetch_s,
                rec_s,
                batched_total,
                len(ids) / batched_total,
                found,
            ],
            [
                f"one GET /trace/{{id}} (measured on {len(subset):,})",
                len(subset),
                len(subset),
                one_fetch_s,
                one_rec_s,
                one_fetch_s + one_rec_s,
                len(subset) / (one_fetch_s + one_rec_s),
                sub_found,
            ],
            [
                f"one GET /trace/{{id}} (extrapolated x{scale:g} to {len(ids):,})",
                len(ids),
                len(ids),
                one_fetch_extrap,
                rec_s,
                one_total,
                len(ids) / one_total,
                "(extrapolated)",
            ],
        ],
    )
    if found != len(ids) or sub_found != len(subset):
        print(
            f"   ! reconcile found {found}/{len(ids)} and {sub_found}/{len(subset)} complete", file=sys.stderr
        )
    print()
    ratio_line(
        f"batched read-back+reconcile total seconds for {len(ids):,} traces / 5 s goal",
        batched_total / 5.0,
        "<=",
        1.0,
        f"({batched_total:.2f} s)",
    )
    ratio_line(
        "speed-up per-trace GET (extrapolated) / batched, fetch + reconcile",
        one_total / batched_total,
        ">=",
        20.0,
    )
    ratio_line("speed-up per-trace GET (extrapolated) / batched, read-back only", one_fetch_extrap / fetch_s)
    print()
    print(
        f"   read-back memory (tracemalloc, batched, {len(ids):,} traces): peak {peak_per_trace:,.0f} B "
        f"per trace, {kept_per_trace:,.0f} B per trace still held after (the observations)"
    )
    ratio_line("read-back peak bytes per trace / retained bytes per trace", peak_per_trace / kept_per_trace)
    footer()
    return 0 if found == len(ids) and sub_found == len(subset) else 1


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)
