"""Shared helpers for the benchmarks in bench/ (not part of the loadgen package).

Every benchmark measures its figure AND its baseline in the same run on the same machine, and
prints a table plus one or more lines of the form

    ratio <what> = <number>  (goal <op> <number>: met|missed)

which tests/unit/test_bench_smoke.py looks for. Processes a benchmark starts are stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
GATEWAY_SERVICE = "istio-ingressgateway"
SIDECAR_SERVICE = "httpbin.istioinaction"
HOST_HEADER = "httpbin.istioinaction.io"


# --- machine state ---------------------------------------------------------------------------------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def banner(title: str, quick: bool) -> None:
    print(f"== {title}{' (--quick: tiny sizes, figures are not meaningful)' if quick else ''}")
    print(
        f"   cpus={os.cpu_count()}  loadavg(1/5/15 min) at start: {loadavg()}  python={sys.version.split()[0]}"
    )


def footer() -> None:
    print(f"   loadavg at end: {loadavg()}")


# --- CPU accounting --------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process, in seconds (/proc/PID/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # skip "pid (comm) ", comm may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class CpuMeter:
    """CPU seconds used by a set of live processes between start() and stop()."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._c0: dict[str, float] = {}
        self.wall_s = 0.0
        self.cpu_s: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._c0 = {k: _safe_cpu(p) for k, p in self.pids.items()}
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> CpuMeter:
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = {k: _safe_cpu(p) - self._c0[k] for k, p in self.pids.items()}
        return self

    def percent(self, name: str) -> float:
        return 100.0 * self.cpu_s[name] / self.wall_s if self.wall_s else 0.0


def machine_busy_cpu_s() -> float:
    """CPU seconds all CPUs spent not idle since boot (/proc/stat), to tell a saturated machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


class CpuSampler:
    """Samples the CPU time of named live processes (and of the whole machine, as "machine") every
    interval_s in a thread, so CPU over any sub-interval (e.g. only while load ran) can be read."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.05) -> None:
        self.pids = pids
        self.interval_s = interval_s
        self.samples: dict[str, list[tuple[float, float]]] = {k: [] for k in [*pids, "machine"]}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _take(self) -> None:
        now = time.time()
        for name, pid in self.pids.items():
            self.samples[name].append((now, _safe_cpu(pid)))
        self.samples["machine"].append((now, machine_busy_cpu_s()))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take()

    def __enter__(self) -> CpuSampler:
        self._take()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def percent(self, name: str, t0: float, t1: float) -> float:
        """CPU % of one process (or "machine": 200 = both cores busy) between two epoch times."""
        if t1 <= t0:
            return 0.0
        series = self.samples[name]
        return 100.0 * (_interp(series, t1) - _interp(series, t0)) / (t1 - t0)


def _safe_cpu(pid: int) -> float:
    try:
        return proc_cpu_s(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


@dataclass
class ChildResult:
    returncode: int
    wall_s: float
    cpu_s: float  # user + system of the child and its reaped descendants
    maxrss_kib: int
    # (epoch seconds, CPU seconds so far) every ~50 ms while it ran: CPU over a sub-interval
    cpu_samples: list[tuple[float, float]]

    def cpu_between(self, t0: float, t1: float) -> float:
        """CPU seconds the child used between two epoch times (linear between samples)."""
        return _interp(self.cpu_samples, t1) - _interp(self.cpu_samples, t0)


def _interp(samples: list[tuple[float, float]], t: float) -> float:
    if not samples:
        return 0.0
    if t <= samples[0][0]:
        return samples[0][1]
    for (ta, ca), (tb, cb) in zip(samples, samples[1:], strict=False):
        if ta <= t <= tb:
            return ca + (cb - ca) * ((t - ta) / (tb - ta) if tb > ta else 0.0)
    return samples[-1][1]


def run_child(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 600.0,
    stdout: Any = subprocess.DEVNULL,
    stderr: Any = subprocess.PIPE,
    cwd: Path | None = None,
) -> ChildResult:
    """Run a command to completion and return its exact CPU time and peak RSS (wait4 rusage)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        env=full_env,
        stdout=stdout,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        start_new_session=True,
    )
    deadline = t0 + timeout_s
    samples: list[tuple[float, float]] = []
    while True:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            samples.append((time.time(), proc_cpu_s(proc.pid)))
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            stop_pid(proc.pid)
            pid, status, ru = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and stderr is subprocess.PIPE and proc.stderr is not None:
        tail = proc.stderr.read().decode(errors="replace")[-2000:]
        print(f"   ! {Path(argv[0]).name} exited {proc.returncode}: {tail}", file=sys.stderr)
    if proc.stderr is not None:
        proc.stderr.close()
    return ChildResult(proc.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, samples)


def stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM one process by PID, SIGKILL it if it has not exited within timeout_s."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child, or already reaped
            done = pid if not Path(f"/proc/{pid}").exists() else 0
        if done:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class Collector:
    """`python -m loadgen.stack.collector --port 0 --data-dir DIR`, stopped by PID. With
    `otlp_grpc`, also `--otlp-grpc-port 0`: `grpc_target` is then the HOST:PORT of its OTLP/gRPC."""

    def __init__(self, data_dir: Path, *, otlp_grpc: bool = False) -> None:
        self.data_dir = data_dir
        self.otlp_grpc = otlp_grpc
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.grpc_target = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Collector:
        log = open(self.data_dir.parent / "collector.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "loadgen.stack.collector",
                "--port",
                "0",
                "--data-dir",
                str(self.data_dir),
                *(["--otlp-grpc-port", "0"] if self.otlp_grpc else []),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # one JSON ready line
        if not line:
            raise RuntimeError(f"collector did not start; see {self.data_dir.parent / 'collector.log'}")
        ready = json.loads(line)
        self.url = str(ready["url"])
        if self.otlp_grpc:  # "otlp_grpc_url": "http://127.0.0.1:PORT"
            self.grpc_target = str(ready["otlp_grpc_url"]).removeprefix("http://")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc.pid)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# --- realistic spans -------------------------------------------------------------------------------


def _hex(rng: random.Random, bits: int) -> str:
    return format(rng.getrandbits(bits), f"0{bits // 4}x")


def envoy_trace(rng: random.Random, ts_us: int, run_id: str = "bench") -> list[dict[str, Any]]:
    """The 3 spans the embedded mesh leaves per sampled request (gateway SERVER + CLIENT, sidecar
    SERVER), shaped exactly like what its Envoys POST (captured from a real run)."""
    trace_id = _hex(rng, 128)
    root, client, server = trace_id[16:], _hex(rng, 64), _hex(rng, 64)
    xrid = str(uuid.UUID(int=rng.getrandbits(128)))
    up = f"127.0.0.1:{rng.randint(30000, 60000)}"
    common = {
        "component": "proxy",
        "http.protocol": "HTTP/1.1",
        "http.status_code": "200",
        "response_flags": "-",
    }
    inbound = {
        **common,
        "http.method": "GET",
        "http.url": f"http://{HOST_HEADER}/headers",
        "request_size": "0",
        "response_size": "493",
        "guid:x-request-id": xrid,
        "user_agent": "python-httpx/0.28.1",
        "downstream_cluster": "-",
        "loadgen.run_id": run_id,
    }
    gw_cluster = f"outbound|8000||{HOST_HEADER}"
    return [
        {
            "traceId": trace_id, "id": server, "parentId": client, "kind": "SERVER", "name": HOST_HEADER,
            "timestamp": ts_us + 240, "duration": 1387,
            "localEndpoint": {"serviceName": SIDECAR_SERVICE, "ipv4": "192.0.2.2"},
            "annotations": [{"timestamp": ts_us + 1627, "value": "ss"}],
            "tags": {**inbound, "upstream_cluster": "inbound|8000||", "upstream_cluster.name": "inbound|8000||",
                     "node_id": f"sidecar~127.0.0.1~{SIDECAR_SERVICE}", "peer.address": "127.0.0.1"},
        },
        {
            "traceId": trace_id, "id": client, "parentId": root, "kind": "CLIENT",
            "name": f"router {gw_cluster} egress", "timestamp": ts_us + 230, "duration": 2419,
            "localEndpoint": {"serviceName": GATEWAY_SERVICE, "ipv4": "192.0.2.2"},
            "annotations": [{"timestamp": ts_us + 2649, "value": "cr"}],
            "tags": {**common, "upstream_address": up, "upstream_cluster": gw_cluster,
                     "upstream_cluster.name": gw_cluster, "peer.address": up},
        },
        {
            "traceId": trace_id, "id": root, "kind": "SERVER", "name": HOST_HEADER,
            "timestamp": ts_us, "duration": 2547,
            "localEndpoint": {"serviceName": GATEWAY_SERVICE, "ipv4": "192.0.2.2"},
            "annotations": [{"timestamp": ts_us + 2679, "value": "ss"}],
            "tags": {**inbound, "upstream_cluster": gw_cluster, "upstream_cluster.name": gw_cluster,
                     "node_id": f"gateway~127.0.0.1~{GATEWAY_SERVICE}", "peer.address": "127.0.0.1"},
        },
    ]  # fmt: skip


# --- output ----------------------------------------------------------------------------------------


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print("   " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("   " + "  ".join("-" * w for w in widths))
    for r in cells:
        print(
            "   "
            + "  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(r, widths, strict=True))
        )


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _numeric(s: str) -> bool:
    return bool(s) and (s[0].isdigit() or (s[0] == "-" and len(s) > 1))


def ratio_line(
    what: str, value: float | None, op: str | None = None, goal: float | None = None, note: str = ""
) -> bool | None:
    """Print `ratio <what> = <value>  (goal <op> <goal>: met|missed)`; returns met (None: no goal)."""
    if value is None:
        print(f"ratio {what} = n/a  {note}".rstrip())
        return None
    met = None
    text = f"ratio {what} = {value:.3f}"
    if op is not None and goal is not None:
        met = value >= goal if op == ">=" else value <= goal
        text += f"  (goal {op} {goal:g}: {'met' if met else 'missed'})"
    if note:
        text += f"  {note}"
    print(text)
    return met


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
