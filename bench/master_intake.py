"""The master's ledger intake: records/s a Locust master takes from its workers, and its ceiling.

    python bench/master_intake.py [--quick] [--workers N] [--rates 25000,50000,100000]
                                  [--duration S] [--rounds R]

In a distributed run (`loadgen run --processes N`, `--master`) each worker relays its ledger
records to the master over Locust's message channel (loadgen.traffic.relay), and the master
writes the run's one ledger. This measures that path alone, in alternation (a, b, a, b, ...):

  (a)  a Locust master and N synthetic workers (bench/_intake_locustfile.py) whose users send no
       request and append ledger records of a traced request's shape at an offered total rate
       (each of --rates in turn); the master receives them and writes them with the run's
       ledger writer. Afterwards the ledger's lines are counted against what the workers sent.
  (b)  the baseline: the same records appended in this process to one ledger writer as fast as
       it goes (what a single-process run does per request)

Figures, measured in the middle of each run from the growth of the ledger file and /proc: records/s
on the wall clock, and records per master CPU-second: the ceiling of a master with a core of its
own (on this 2-core machine the workers and other jobs share the cycles). The issue's bar: the
master must take at least 50k records/s (the total request rate), or the design changes (each
worker its own shard). The offered rates stay below saturation on purpose: a worker that outruns
the master fills the channel's queue, and then Locust's heartbeats wait behind ledger batches.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, banner, footer, loadavg, median, print_table, proc_cpu_s, ratio_line, stop_pid
from _intake_record import RECORD

from loadgen.ledger import count_lines
from loadgen.ledger_fast import FastLedgerWriter

LOCUSTFILE = Path(__file__).resolve().parent / "_intake_locustfile.py"
GOAL_RECORDS_PER_S = 50_000.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baseline_run(workdir: Path, duration_s: float) -> dict[str, float]:
    """The workers' records appended to one writer in this process for `duration_s`."""
    template = {**RECORD, "wseq": 0, "worker": "host:1"}
    path = workdir / "baseline.jsonl"
    path.unlink(missing_ok=True)
    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    with FastLedgerWriter(path, worker="host:1") as writer:
        while time.perf_counter() - t0 < duration_s:
            for _ in range(1000):
                n += 1
                writer.append({**template, "rid": f"{n:032x}", "wseq": n})
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    assert count_lines(path) == n
    return {"records": n, "rps": n / wall, "per_cpu_s": n / cpu, "cpu_pct": 100 * cpu / wall}


def master_run(workdir: Path, workers: int, rate: float, duration_s: int, tag: str) -> dict[str, float]:
    """A master and `workers` synthetic workers offering `rate` records/s in all for `duration_s`;
    the ledger's growth sampled."""
    port = free_port()
    ledger = workdir / f"{tag}.jsonl"
    counts = workdir / f"{tag}.counts"
    counts.mkdir()
    env = {
        **os.environ,
        "LOADGEN_LEDGER": str(ledger),
        "LOADGEN_RUN_ID": f"intake-{tag}",
        "LOADGEN_INTAKE_RATE": str(rate / workers),
        "LOADGEN_INTAKE_COUNTS": str(counts),
    }
    common = ["--loglevel", "WARNING"]
    master = _popen(
        [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--master", "--headless",
            "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "--expect-workers", str(workers), "-u", str(workers), "-r", str(workers),
            "-t", f"{duration_s}s", "--only-summary", "--stop-timeout", "5", *common,
        ],
        env, workdir / f"{tag}.master.log",
    )  # fmt: skip
    procs = [
        _popen(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(port),
                *common,
            ],
            env,
            workdir / f"{tag}.worker{i}.log",
        )  # fmt: skip
        for i in range(workers)
    ]
    samples: list[tuple[float, int, float, float]] = []  # (time, ledger bytes, master CPU, workers CPU)
    try:
        deadline = time.monotonic() + duration_s + 90
        while master.poll() is None and time.monotonic() < deadline:
            size = ledger.stat().st_size if ledger.exists() else 0
            samples.append((time.monotonic(), size, _cpu(master.pid), sum(_cpu(p.pid) for p in procs)))
            time.sleep(0.25)
        if master.returncode is None:
            raise RuntimeError("the master did not end")
    finally:
        for p in [master, *procs]:
            if p.poll() is None:
                stop_pid(p.pid)
            p.wait()
    lines = count_lines(ledger)
    sent = sum(int(f.read_text()) for f in counts.iterdir())
    if not lines:
        raise RuntimeError(f"no ledger written: see {workdir}/{tag}.master.log")
    bytes_per_record = ledger.stat().st_size / lines
    # The steady middle: from 1 s after the first record to 1 s before the workers' end.
    first = next(t for t, size, _, _ in samples if size > 0)
    mid = [s for s in samples if first + 1.0 <= s[0] <= first + duration_s - 1.0]
    if len(mid) < 2:
        raise RuntimeError("run too short to measure (give --duration >= 4)")
    (t0, b0, m0, w0), (t1, b1, m1, w1) = mid[0], mid[-1]
    records = (b1 - b0) / bytes_per_record
    return {
        "records": lines,
        "sent": sent,
        "rps": records / (t1 - t0),
        "per_cpu_s": records / (m1 - m0) if m1 > m0 else 0.0,
        "cpu_pct": 100 * (m1 - m0) / (t1 - t0),
        "workers_cpu_pct": 100 * (w1 - w0) / (t1 - t0),
        "worker_us_per_record": 1e6 * (w1 - w0) / records if records else 0.0,
    }


def _popen(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, cwd=REPO)


def _cpu(pid: int) -> float:
    try:
        return proc_cpu_s(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds, tiny sizes (smoke test)")
    p.add_argument("--workers", type=int, default=2, help="synthetic workers (default 2)")
    p.add_argument(
        "--rates", default="25000,50000,100000", help="offered records/s in all (default 25000,50000,100000)"
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per master run (default 10)")
    p.add_argument("--rounds", type=int, default=2, help="alternation rounds (default 2)")
    args = p.parse_args()
    if args.quick:
        args.workers, args.rates, args.duration, args.rounds = 1, "5000", 4, 1
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    banner(
        f"master ledger intake: a Locust master fed by {args.workers} synthetic workers vs one in-process "
        f"writer ({args.duration}s runs, {args.rounds} alternation rounds)",
        args.quick,
    )
    rows: list[list[object]] = []
    master: dict[float, list[dict[str, float]]] = {rate: [] for rate in rates}
    base: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        for r in range(args.rounds):
            for rate in rates:
                m = master_run(Path(tmp), args.workers, rate, args.duration, f"m{r}-{rate:g}")
                master[rate].append(m)
                rows.append([f"a master + workers @ {rate:,.0f}/s", r + 1, m["sent"], m["records"], m["rps"],
                             m["per_cpu_s"], m["cpu_pct"], m["workers_cpu_pct"], m["worker_us_per_record"],
                             loadavg().split()[0]])  # fmt: skip
                b = baseline_run(Path(tmp), min(args.duration, 3))
                base.append(b)
                rows.append(["b one writer", r + 1, None, b["records"], b["rps"], b["per_cpu_s"], b["cpu_pct"],
                             None, None, loadavg().split()[0]])  # fmt: skip
    print_table(
        [
            "path", "round", "records sent", "records written", "records/s (wall)", "records per writer CPU-s",
            "writer CPU %", "workers CPU %", "worker CPU µs/record", "loadavg 1 min",
        ],
        rows,
    )  # fmt: skip
    print()
    for rate, runs in master.items():
        ratio_line(
            f"records the master wrote / records its workers sent @ {rate:,.0f} records/s offered",
            sum(x["records"] for x in runs) / sum(x["sent"] for x in runs),
            ">=",
            1.0,
        )
    every = [x for runs in master.values() for x in runs]
    m_cpu, b_cpu = median([x["per_cpu_s"] for x in every]), median([x["per_cpu_s"] for x in base])
    ratio_line("master ledger intake / one in-process writer, records per CPU-second", m_cpu / b_cpu)
    ratio_line(
        "master ledger intake records per master CPU-second / 50k req/s",
        m_cpu / GOAL_RECORDS_PER_S,
        ">=",
        1.0,
        note=f"({m_cpu:,.0f} records per master CPU-second)",
    )
    footer()
    return 0


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)
