"""`loadgen watch` resources over a long run: memory and open files must stay flat however long it
watches (issue 14: "nothing grows in memory with the run's length", docs/watch.md).

    python bench/watch_soak.py                        # 300 s at 100 req/s + 10 reference traces/s
    python bench/watch_soak.py --quick                # 12 s, for a smoke run
    python bench/watch_soak.py --duration 1800 --rate 50

Starts `python -m loadgen.cli watch` on its own embedded mesh (`--metrics-port 0`, `--output` and
`--state` in a temporary folder, windows `10s,60s`), and every `--interval` seconds samples the
watch process's RSS (/proc/PID/status VmRSS) and open files (/proc/PID/fd), the RSS of its
descendants (Locust separately; the mesh's Envoys, collector and upstream as "mesh") and scrapes
its /metrics for requests sent and checks concluded. Warm-up is the first 20 % of the run. Prints
the samples, then `ratio watch RSS end / after warm-up` and `ratio watch open files end / after
warm-up` (goal <= 1.10 each). The watch is stopped by PID with SIGTERM (it stops its Locust and its
mesh), SIGKILL only after a timeout.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from _common import REPO, banner, footer, print_table, ratio_line, stop_pid

GOAL_RATIO = 1.10
WARMUP_SHARE = 0.20
_METRICS_LINE = re.compile(r"metrics at (http://\S+)/metrics")
_SAMPLE = re.compile(r"^(loadgen_watch_(?:requests|traces)_total)\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)


@dataclass
class Sample:
    t_s: float
    watch_rss_mib: float | None
    watch_fds: int | None
    locust_rss_mib: float | None  # None: no Locust running at that moment
    mesh_rss_mib: float | None
    requests: float | None  # None: the scrape failed or the counter is not exported yet
    concluded: float | None


@dataclass
class WatchProc:
    proc: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def open_files(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (through /proc/PID/task/TID/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for tid in tasks:
            try:
                kids = [int(k) for k in Path(f"/proc/{parent}/task/{tid}/children").read_text().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def is_locust(pid: int) -> bool:
    try:
        return b"locust" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def children_rss(pid: int) -> tuple[float | None, float | None]:
    """(Locust's RSS, the other descendants' RSS) in MiB; None where there is no such process."""
    locust: float | None = None
    mesh: float | None = None
    for kid in descendants(pid):
        rss = rss_mib(kid)
        if rss is None:
            continue
        if is_locust(kid):
            locust = (locust or 0.0) + rss
        else:
            mesh = (mesh or 0.0) + rss
    return locust, mesh


def scrape(url: str) -> tuple[float | None, float | None]:
    """(requests sent, checks concluded) from /metrics; None for a counter not exported."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None, None
    totals: dict[str, float] = {}
    for name, value in _SAMPLE.findall(text):
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals.get("loadgen_watch_requests_total"), totals.get("loadgen_watch_traces_total")


def start_watch(args: argparse.Namespace, tmp: Path) -> WatchProc:
    argv = [
        sys.executable, "-m", "loadgen.cli", "watch",
        "--rate", f"{args.rate:g}", "--reference-rate", f"{args.reference_rate:g}",
        "--window", args.window, "--metrics-port", "0",
        "--output", str(tmp / "out"), "--state", str(tmp / "state"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,
    )
    watch = WatchProc(proc)
    announced = threading.Event()

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            watch.lines.append(line)
            match = _METRICS_LINE.search(line)
            if match and not watch.url:
                watch.url = match.group(1)
                announced.set()

    def read_out() -> None:
        assert proc.stdout is not None
        watch.lines.extend(proc.stdout)

    watch.readers = [threading.Thread(target=f, daemon=True) for f in (read_err, read_out)]
    for reader in watch.readers:
        reader.start()
    if not announced.wait(60):
        stop_watch(watch)
        raise RuntimeError("watch did not announce its metrics URL:\n" + "".join(watch.lines[-20:]))
    return watch


def stop_watch(watch: WatchProc) -> int | None:
    """SIGTERM by PID (watch stops its Locust and its mesh), SIGKILL after 60 s."""
    if watch.proc.poll() is None:
        stop_pid(watch.proc.pid, timeout_s=60.0)
    try:
        code = watch.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        code = None
    for reader in watch.readers:
        reader.join(timeout=10)
    return code


def wait_ready(watch: WatchProc, timeout_s: float) -> float:
    """Seconds until the first request is counted (the mesh started, the probe done)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if watch.proc.poll() is not None:
            raise RuntimeError("watch exited while starting:\n" + "".join(watch.lines[-20:]))
        requests, _ = scrape(watch.url)
        if requests:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"watch counted no request within {timeout_s:g} s:\n" + "".join(watch.lines[-20:]))


def soak(watch: WatchProc, duration_s: float, interval_s: float) -> list[Sample]:
    pid = watch.proc.pid
    samples: list[Sample] = []
    t0 = time.monotonic()
    while True:
        t = time.monotonic() - t0
        locust, mesh = children_rss(pid)
        requests, concluded = scrape(watch.url)
        samples.append(Sample(t, rss_mib(pid), open_files(pid), locust, mesh, requests, concluded))
        if t >= duration_s or watch.proc.poll() is not None:
            return samples
        time.sleep(max(0.0, min(interval_s, duration_s - t)))


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _ratio(end: float | None, base: float | None) -> float | None:
    return end / base if end is not None and base else None


def report(samples: list[Sample], duration_s: float) -> tuple[bool | None, bool | None]:
    print_table(
        ["t s", "watch RSS MiB", "watch fds", "Locust RSS MiB", "mesh RSS MiB", "requests", "concluded"],
        [
            [s.t_s, s.watch_rss_mib, s.watch_fds, s.locust_rss_mib, s.mesh_rss_mib,
             None if s.requests is None else int(s.requests),
             None if s.concluded is None else int(s.concluded)]
            for s in samples
        ],
    )  # fmt: skip
    warm = next((s for s in samples if s.t_s >= WARMUP_SHARE * duration_s), samples[-1])
    end = samples[-1]
    span = end.t_s - warm.t_s
    if end.requests is not None and warm.requests is not None and span > 0:
        done = (end.concluded or 0.0) - (warm.concluded or 0.0)
        print(
            f"   after warm-up ({warm.t_s:.0f} s -> {end.t_s:.0f} s): "
            f"{(end.requests - warm.requests) / span:,.1f} requests/s counted, "
            f"{done / span:,.1f} checks/s concluded"
        )
    print()
    rss = ratio_line(
        "watch RSS end / after warm-up",
        _ratio(end.watch_rss_mib, warm.watch_rss_mib),
        "<=",
        GOAL_RATIO,
        f"({_mib(warm.watch_rss_mib)} -> {_mib(end.watch_rss_mib)} MiB)",
    )
    fds = ratio_line(
        "watch open files end / after warm-up",
        _ratio(end.watch_fds, warm.watch_fds),
        "<=",
        GOAL_RATIO,
        f"({warm.watch_fds} -> {end.watch_fds})",
    )
    if warm.locust_rss_mib is not None and end.locust_rss_mib is not None:
        print(
            f"   Locust RSS {warm.locust_rss_mib:.1f} -> {end.locust_rss_mib:.1f} MiB, "
            f"mesh RSS {warm.mesh_rss_mib or 0:.1f} -> {end.mesh_rss_mib or 0:.1f} MiB (measured, no goal)"
        )
    return rss, fds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="12 s (smoke run; the figures mean nothing)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds watched (default 300)")
    p.add_argument("--rate", type=float, default=100.0, help="requests/s through the mesh (default 100)")
    p.add_argument("--reference-rate", type=float, default=10.0, help="reference traces/s (default 10)")
    p.add_argument("--window", default="10s,60s", help="watch's rolling windows (default 10s,60s)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    args = p.parse_args()
    if args.quick:  # a smoke run of the script in the suite: the figures mean nothing at this length
        args.duration = 12.0
        args.interval = 2.0
    banner(
        f"watch soak: {args.duration:g} s of `loadgen watch` on the embedded mesh at {args.rate:g} req/s "
        f"+ {args.reference_rate:g} reference traces/s, windows {args.window}",
        args.quick,
    )
    with tempfile.TemporaryDirectory(prefix="bench-watch-soak-") as tmp:
        watch = start_watch(args, Path(tmp))
        code: int | None = None
        try:
            ready = wait_ready(watch, 120.0)
            print(f"   watch pid {watch.proc.pid}: first request counted {ready:.1f} s after its endpoint")
            samples = soak(watch, args.duration, args.interval)
        finally:
            code = stop_watch(watch)
    alive = samples[-1].watch_rss_mib is not None
    rss, fds = report(samples, args.duration)
    print(f"   watch exit code on SIGTERM: {code}")
    footer()
    if not alive or code != 0:
        print("".join(watch.lines[-20:]), file=sys.stderr)
        return 1
    return 0 if rss is not None and fds is not None else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stopped bench still stops watch
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)
