"""Faults while a run goes, on the real mesh: the instrument must finish, keep every record, and
put each loss where it happened.

Every test that breaks something owns its mesh (an EmbeddedMesh driven as an *external* target,
so the test, not `loadgen run`, holds the processes) and stops everything it started by PID.

| fault                                   | test                                                        |
|-----------------------------------------|-------------------------------------------------------------|
| collector SIGKILLed, restarted same port| test_collector_killed_and_restarted_mid_run                 |
| gateway SIGKILLed, restarted same port  | test_gateway_killed_and_restarted_mid_run                   |
| backend 5xx / timeouts / slow answers   | test_flaky_backend_retries_and_never_counts_unqueried_missing |
| Ctrl-C during read-back                 | test_interrupt_during_read_back_leaves_unknown_not_missing  |
| hostile span data, run id, backend text | test_hostile_text_is_escaped_and_credentials_never_written  |
| listening sockets                       | test_every_mesh_process_listens_on_loopback_only            |
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import random
import re
import signal
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from rich.console import Console

from loadgen.analysis.reconcile import (
    Expectation,
    Outcome,
    TraceObservation,
    classify,
    ledger_trace_id,
    upstream_decision,
)
from loadgen.analysis.windows import WindowTally, loss_intervals, tally_windows
from loadgen.backends._common import all_error, assign
from loadgen.backends.base import BackendOptions, TraceBackend
from loadgen.backends.zipkin import ZipkinBackend
from loadgen.emitter import read_reference_log, summarize_reference_log
from loadgen.ledger import LedgerStats, count_lines, read_ledger
from loadgen.readback import read_back
from loadgen.report.render import render_terminal
from loadgen.run import RunError, RunOptions, RunResult, _options_dict, execute_run, read_back_and_reconcile
from loadgen.stack.envoy import EnvoyProcess, TracingConfig
from loadgen.stack.mesh import GATEWAY_SERVICE, SIDECAR_SERVICE, EmbeddedMesh, MeshConfig
from loadgen.stack.procs import ManagedProcess, python_module_argv

from .conftest import leftover_processes

pytestmark = pytest.mark.integration

FLUSH_MS = 1000  # Envoy's span flush interval in these meshes: spans wait at most this long


def quiet(_: str) -> None:
    pass


@pytest.fixture
def own_mesh(tmp_path: Path) -> Iterator[EmbeddedMesh]:
    """A mesh this test may break; whatever replaced its parts is stopped through the mesh."""
    mesh = EmbeddedMesh(
        tmp_path / "mesh",
        MeshConfig(tracing=TracingConfig(sampling_percent=100.0, flush_interval_ms=FLUSH_MS)),
    ).start()
    try:
        yield mesh
    finally:
        mesh.stop()
    assert leftover_processes(str(tmp_path / "mesh")) == []


def external_options(mesh: EmbeddedMesh, out: Path, run_id: str, **overrides: Any) -> RunOptions:
    opts = RunOptions(
        run_id=run_id,
        output_dir=out,
        duration_s=30,  # an upper bound: max_requests ends the run
        users=4,
        spawn_rate=4,
        gateway=mesh.gateway_url,
        host=mesh.host_header,
        collector=mesh.collector_url,
        backend=f"zipkin:{mesh.collector_url}",
        expect_percent=100.0,
        quiet_s=FLUSH_MS / 1000 + 1.0,
        poll_interval_s=0.5,
        max_wait_s=20.0,
        seed=7,
    )
    for key, value in overrides.items():
        setattr(opts, key, value)
    return opts


class BackgroundRun:
    """`execute_run` in a worker thread, so that the test's main thread can break and repair the
    mesh meanwhile.

    The main thread must be the one that (re)starts processes: the mesh's children ask Linux for
    PR_SET_PDEATHSIG, which fires when the *thread* that forked them ends, so a process started
    from a short-lived helper thread is SIGTERMed as soon as that thread returns."""

    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="loadgen-run", daemon=True)

    def _run(self) -> None:
        try:
            self.result = execute_run(self.opts, quiet)
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def start(self) -> BackgroundRun:
        self.thread.start()
        return self

    def wait_for_requests(self, n: int, timeout_s: float = 60.0) -> None:
        ledger = self.opts.output_dir / self.opts.run_id / "ledger.jsonl"
        deadline = time.monotonic() + timeout_s
        while count_lines(ledger) < n:
            assert self.thread.is_alive(), f"the run ended before {n} requests: {self.error!r}"
            assert time.monotonic() < deadline, f"the ledger never reached {n} lines"
            time.sleep(0.02)

    def join(self, timeout_s: float = 120.0) -> RunResult:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the run did not finish"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def sigkill(proc: ManagedProcess) -> None:
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.stop()  # reaps it and closes its log; idempotent


def observations(run_dir: Path) -> dict[str, TraceObservation]:
    out = {}
    for line in (run_dir / "fetched.jsonl").read_text().splitlines():
        row = json.loads(line)
        out[row["trace"]] = TraceObservation.from_dict(row)
    return out


def run_expectation(run_dir: Path) -> Expectation:
    exp = json.loads((run_dir / "run.json").read_text())["expectation"]
    return Expectation(int(exp["spans_per_trace"]), tuple(exp["services"]), exp["configured_percent"])


def windows(run_dir: Path, bin_s: float = 0.5) -> list[WindowTally]:
    ref = summarize_reference_log(read_reference_log(run_dir / "reference.jsonl"))
    return tally_windows(
        read_ledger(run_dir / "ledger.jsonl"),
        observations(run_dir),
        run_expectation(run_dir),
        ((tid, o.state, o.spans, o.t) for tid, o in ref.traces.items()),
        bin_s=bin_s,
    )


def assert_ledger_intact(result: RunResult) -> list[dict[str, Any]]:
    """Ledger == Locust's own count, one line per request id, nothing torn."""
    stats = LedgerStats()
    ledger = list(read_ledger(result.run_dir / "ledger.jsonl", stats))
    assert stats.truncated == 0
    s = result.summary
    assert s["locust"] is not None
    assert len(ledger) == s["requests"]["total"] == s["locust"]["requests"]
    assert s["locust"]["failures"] == s["requests"]["errors"]
    assert len({r["rid"] for r in ledger}) == len(ledger)
    return ledger


def within(ts: float, lo: float, hi: float) -> bool:
    return lo <= ts <= hi


# --- collector ----------------------------------------------------------------------------------


def test_collector_killed_and_restarted_mid_run(own_mesh: EmbeddedMesh, tmp_path: Path) -> None:
    """SIGKILL the collector a third into the run, bring a new one up on the same port and data
    dir 1.5 s later. The run completes; the emitter counts the failed exports; every span the
    collector had accepted (202) survives the restart; and every lost trace started in the outage
    (or in the one flush interval before it, when its spans still sat in Envoy's buffer)."""
    mesh = own_mesh
    port = int(mesh.collector_url.rsplit(":", 1)[1])
    run = BackgroundRun(
        external_options(mesh, tmp_path / "out", "ckill", rate=250.0, max_requests=1800, reference_rate=40.0)
    ).start()
    run.wait_for_requests(500)
    before = httpx.get(f"{mesh.collector_url}/loadgen/stats", timeout=2).json()["spans_accepted"]
    t0 = time.time()
    sigkill(mesh.collector)
    time.sleep(1.5)
    mesh.collector = ManagedProcess(
        "collector (restarted)",
        python_module_argv(
            "loadgen.stack.collector", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(mesh.workdir / "collector"),
        ),
        mesh.workdir / "stack" / "collector-restarted.log",
    )  # fmt: skip
    mesh.collector.start(stdout_pipe=True)  # from now on mesh.stop() stops the new one
    ready = mesh.collector.read_ready_line(15.0)
    t1 = time.time()
    assert ready["url"] == mesh.collector_url, "the restarted collector must reuse the port Envoy targets"
    reloaded = httpx.get(f"{mesh.collector_url}/loadgen/stats", timeout=2).json()["spans_accepted"]
    result = run.join()
    run_dir = result.run_dir
    s = result.summary
    assert s["status"] == "complete"
    ledger = assert_ledger_intact(result)
    # The gateway never depended on the collector: no request failed.
    assert s["requests"]["errors"] == 0

    # Accepted spans survive: the new process reloaded at least what the old one had accepted,
    # and every reference trace the exporter saw acknowledged (202) is in the backend, complete.
    assert reloaded >= before > 0
    ref = s["reference"]
    assert ref["collection"]["n"] == ref["exported"] > 0
    assert ref["collection"]["k"] == ref["exported"] and ref["unknown"] == 0
    # The emitter counted the exports that hit the dead port: started = exported + failed + dropped.
    assert ref["failed"] > 0 and ref["emitter_counters"]["export_failures"] > 0
    assert ref["started"] == ref["exported"] + ref["failed"] + ref["dropped"]
    log = list(read_reference_log(run_dir / "reference.jsonl"))
    failed_exports = [r["t"] for r in log if r.get("ev") == "export" and not r["ok"]]
    # An export ends when its HTTP call fails: during the outage, or just after the restart
    # (a pooled connection to the dead process).
    assert failed_exports and all(within(t, t0, t1 + 1.0) for t in failed_exports), (t0, t1, failed_exports)

    # Mesh loss is attributed to the outage: per request, and per window.
    expect = run_expectation(result.run_dir)
    obs = observations(result.run_dir)
    lead = FLUSH_MS / 1000 + 0.5  # spans wait up to one flush interval in Envoy before they are sent
    lost_ts, kept_outside = [], 0
    for rec in ledger:
        decided = upstream_decision(rec)
        tid = ledger_trace_id(rec)
        outcome = classify(decided, obs.get(tid) if tid else None, expect)
        assert outcome is not Outcome.UNKNOWN  # the backend answered for every id
        if outcome in (Outcome.MISSING, Outcome.PARTIAL):
            lost_ts.append(rec["ts"])
        elif decided and not within(rec["ts"], t0 - lead, t1 + 1.0):
            kept_outside += 1
    assert lost_ts, "a 1.5 s collector outage at 250 req/s must lose mesh spans"
    assert all(within(ts, t0 - lead, t1 + 0.5) for ts in lost_ts), (t0, t1, min(lost_ts), max(lost_ts))
    print(
        f"lost {len(lost_ts)} in [{min(lost_ts) - t0:+.2f}, {max(lost_ts) - t0:+.2f}] s of the kill; outage {t1 - t0:.2f} s; found outside: {kept_outside}"
    )
    assert kept_outside > 100  # not vacuous: outside the window everything sampled was found complete
    assert s["mesh"]["collection"]["n"] - s["mesh"]["collection"]["k"] == len(lost_ts)
    assert s["mesh"]["leaked"] == 0 and s["mesh"]["unknown"] == 0

    bins = windows(result.run_dir)
    assert sum(w.missing + w.partial for w in bins) == len(lost_ts)
    assert sum(w.reference_failed for w in bins) == ref["failed"]
    intervals = loss_intervals(bins)
    assert intervals
    for start, end, _ in intervals:
        # Bins are 0.5 s wide; reference traces start up to one export delay (0.5 s) before it fails.
        assert start >= t0 - lead - 0.5 and end <= t1 + 1.5, (t0, t1, intervals)


# --- gateway ------------------------------------------------------------------------------------


def restart_envoy_on_port(old: EnvoyProcess, mesh: EmbeddedMesh, workdir: Path) -> EnvoyProcess:
    """A new Envoy with the old one's bootstrap, its listener pinned to the old port (the
    bootstrap asks for port 0; a client keeps the URL it was given)."""
    new = EnvoyProcess(old.spec, mesh.config.tracing, workdir, mesh.config.envoy_concurrency)
    config = json.loads(new.config_path.read_text())
    config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = old.port
    new.config_path.write_text(json.dumps(config, indent=2))
    new.start()
    assert new.port == old.port
    return new


def test_gateway_killed_and_restarted_mid_run(own_mesh: EmbeddedMesh, tmp_path: Path) -> None:
    """SIGKILL the gateway Envoy a third into a paced run, start a new one on the same port 1 s
    later. The run completes without a crash; every failed request is in the ledger (ledger ==
    Locust, failures == errors) and started during the outage; the spans the dead gateway still
    had buffered are the only traces lost; everything after the restart is found complete."""
    mesh = own_mesh
    assert mesh.gateway is not None
    run = BackgroundRun(
        external_options(mesh, tmp_path / "out", "gkill", rate=200.0, max_requests=1200, reference_rate=10.0)
    ).start()
    run.wait_for_requests(400)
    old = mesh.gateway
    t0 = time.time()
    sigkill(old.process)
    time.sleep(1.0)
    mesh.gateway = restart_envoy_on_port(old, mesh, mesh.workdir / "stack" / "restarted")
    t1 = time.time()
    result = run.join()
    s = result.summary
    assert s["status"] == "complete"
    ledger = assert_ledger_intact(result)

    errors = [r for r in ledger if r["status"] != 200]
    assert errors, "requests sent to a dead gateway must fail"
    assert all(r["status"] == 0 for r in errors)  # connection refused/reset: no HTTP answer
    # Every error started during the outage (a request in flight at the kill started just before).
    assert all(within(r["ts"], t0 - 0.5, t1 + 0.5) for r in errors), (t0, t1, [r["ts"] for r in errors][:5])
    after = [r for r in ledger if r["ts"] > t1 + 0.5]
    assert len(after) > 100 and all(r["status"] == 200 for r in after)

    # Errors per window: only the bins of the outage have errors, and they add up.
    bins = windows(result.run_dir)
    assert sum(w.errors for w in bins) == s["requests"]["errors"] == len(errors)
    assert all(within(w.start, t0 - 1.0, t1 + 0.5) for w in bins if w.errors)

    # A failed request has no decision: it is not in the collection rate, never "missing".
    expect = run_expectation(result.run_dir)
    obs = observations(result.run_dir)
    for rec in ledger:
        tid = ledger_trace_id(rec)
        outcome = classify(upstream_decision(rec), obs.get(tid) if tid else None, expect)
        if rec["status"] != 200:
            assert outcome is Outcome.UNKNOWN
        elif outcome in (Outcome.MISSING, Outcome.PARTIAL):
            # Only spans still buffered in the killed gateway (at most one flush interval old).
            assert within(rec["ts"], t0 - FLUSH_MS / 1000 - 0.5, t0 + 0.1), (t0, rec["ts"])
    collection = s["mesh"]["collection"]
    print(
        f"gateway down {t1 - t0:.2f} s: {len(errors)} errors in [{min(r['ts'] for r in errors) - t0:+.2f}, "
        f"{max(r['ts'] for r in errors) - t0:+.2f}] s; lost traces {collection['n'] - collection['k']}"
    )
    assert collection["n"] == sum(m["decided_sampled"] for m in s["modes"].values())
    assert s["mesh"]["unknown"] == 0 and s["mesh"]["leaked"] == 0
    assert s["reference"]["collection"]["k"] == s["reference"]["collection"]["n"] > 0


# --- a flaky backend during read-back -------------------------------------------------------------

TOKEN = "s3cr3t-bearer-token-for-loadgen-tests"


class FlakyProxy(ThreadingHTTPServer):
    """A loopback reverse proxy in front of the real collector's query API that misbehaves.

    - needs `Authorization: Bearer TOKEN` (401 otherwise), and reflects that header in every
      error body it makes up, like a careless gateway would;
    - a request naming any `cursed` trace id answers 503 every time (retries cannot help);
    - every other request fails its first attempt in one of four ways chosen from a CRC of the
      request (503, 500, a hang past the client's timeout, or a slow but good answer) and is
      served on the next attempt;
    - `/traces` (the run-tag search) always answers 500.
    """

    daemon_threads = True

    def __init__(self, upstream: str, cursed: set[str], hang_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.upstream = upstream
        self.cursed = cursed
        self.hang_s = hang_s
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()  # per request (path + query)
        self.served: Counter[str] = Counter()  # by kind
        self.unauthorized = 0
        self.first_attempts = 0
        self.client = httpx.Client(timeout=5.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is part of the test

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.client.close()


class _FlakyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FlakyProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        srv = self.server
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {TOKEN}":
            with srv.lock:
                srv.unauthorized += 1
            self._send(401, b"credentials required")
            return
        reflected = f"upstream trouble; your request carried Authorization: {auth}".encode()
        split = urlsplit(self.path)
        ids = set(parse_qs(split.query).get("traceIds", [""])[0].split(",")) | {split.path.rsplit("/", 1)[-1]}
        with srv.lock:
            attempt = srv.attempts[self.path]
            srv.attempts[self.path] += 1
        if split.path.endswith("/traces"):
            kind = "search-500"
        elif ids & srv.cursed:
            kind = "cursed-503"
        elif attempt == 0 and not split.path.endswith("/services"):
            with srv.lock:
                kind = ("503", "500", "hang", "slow")[srv.first_attempts % 4]
                srv.first_attempts += 1
        else:
            kind = "ok"
        with srv.lock:
            srv.served[kind] += 1
        if kind in ("search-500", "500"):
            self._send(500, b"<script>alert('search')</script>\x1b[31m " + reflected)
        elif kind in ("cursed-503", "503"):
            self._send(503, reflected)
        elif kind == "hang":
            time.sleep(srv.hang_s)  # the client gave up long ago; the write may fail
            self._send(503, reflected)
        else:
            if kind == "slow":
                time.sleep(srv.hang_s / 4)
            resp = srv.client.get(srv.upstream + self.path)
            self._send(resp.status_code, resp.content, resp.headers.get("content-type", "text/plain"))


def zipkin_span(trace: str, n: int, service: str, kind: str, run_id: str, ts_us: int) -> dict[str, Any]:
    return {
        "traceId": trace,
        "id": f"{zlib.crc32(f'{trace}{n}'.encode()):08x}{n:08x}",
        "kind": kind,
        "name": "get /headers",
        "timestamp": ts_us,
        "duration": 1000,
        "localEndpoint": {"serviceName": service},
        "tags": {"loadgen.run_id": run_id},
    }


MESH_SPANS = ((GATEWAY_SERVICE, "SERVER"), (GATEWAY_SERVICE, "CLIENT"), (SIDECAR_SERVICE, "SERVER"))


@dataclass
class SyntheticRun:
    """A run folder as `loadgen run` leaves it after the load (ledger, reference log, run.json),
    with its spans already in a real collector: `truth[trace]` = spans stored / spans expected."""

    run_dir: Path
    run_id: str
    expect: Expectation
    sampled: list[str]
    not_sampled: list[str]
    reference: list[str]
    stored: dict[str, int]


def synthetic_run(tmp_path: Path, collector_url: str, run_id: str, rng: random.Random) -> SyntheticRun:
    run_dir = tmp_path / run_id
    run_dir.mkdir(parents=True)
    now = time.time()
    stored: dict[str, int] = {}
    batches: list[dict[str, Any]] = []
    sampled: list[str] = []
    not_sampled: list[str] = []
    reference: list[str] = []
    with open(run_dir / "ledger.jsonl", "w") as ledger:
        for i in range(240):
            trace = f"{rng.getrandbits(128):032x}"
            flag = "1" if i % 4 else "0"
            ts = now - 10 + i * 0.02
            ledger.write(
                json.dumps(
                    {
                        "seq": i,
                        "rid": f"r{i}",
                        "ts": ts,
                        "latency_ms": 2.0,
                        "status": 200,
                        "error": None,
                        "mode": "b3_multi_sampled" if flag == "1" else "b3_multi_not_sampled",
                        "inj_trace": trace,
                        "inj_span": f"{i + 1:016x}",
                        "inj_flag": flag,
                        "up_trace": trace,
                        "up_span": f"{i + 1:016x}",
                        "up_flag": flag,
                        "up_xrid": None,
                    }  # fmt: skip
                )
                + "\n"
            )
            (sampled if flag == "1" else not_sampled).append(trace)
            # Sampled: 60 % complete, 20 % one span of three, 20 % nothing at all.
            keep = 0 if flag == "0" else rng.choices((3, 1, 0), (6, 2, 2))[0]
            stored[trace] = keep
            ts_us = int(ts * 1e6)
            batches += [zipkin_span(trace, n, *MESH_SPANS[n], run_id, ts_us) for n in range(keep)]
    with open(run_dir / "reference.jsonl", "w") as ref:
        ref.write(json.dumps({"ev": "open", "t": now - 10, "run_id": run_id}) + "\n")
        for i in range(30):
            trace = f"{rng.getrandbits(128):032x}"
            reference.append(trace)
            t = now - 10 + i * 0.1
            ref.write(json.dumps({"ev": "start", "trace": trace, "spans": 2, "seq": i, "t": t}) + "\n")
            ref.write(json.dumps({"ev": "export", "ok": True, "t": t + 0.5, "spans": {trace: 2}}) + "\n")
            keep = rng.choices((2, 0), (8, 2))[0]
            stored[trace] = keep
            batches += [
                zipkin_span(trace, n, "loadgen-reference", "SERVER", run_id, int(t * 1e6))
                for n in range(keep)
            ]
        ref.write(json.dumps({"ev": "end", "t": now}) + "\n")
    resp = httpx.post(f"{collector_url}/api/v2/spans", json=batches, timeout=10)
    assert resp.status_code == 202
    expect = Expectation(3, (GATEWAY_SERVICE, SIDECAR_SERVICE), None)
    return SyntheticRun(run_dir, run_id, expect, sampled, not_sampled, reference, stored)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[str]:
    proc = ManagedProcess(
        "collector",
        python_module_argv("loadgen.stack.collector", "--port", "0", "--data-dir", str(tmp_path / "spans")),
        tmp_path / "collector.log",
    )
    proc.start(stdout_pipe=True)
    try:
        yield str(proc.read_ready_line(15.0)["url"])
    finally:
        proc.stop()


def fetched_status(run_dir: Path) -> dict[str, str]:
    return {
        row["trace"]: row["status"]
        for row in map(json.loads, (run_dir / "fetched.jsonl").read_text().splitlines())
    }


def test_flaky_backend_retries_and_never_counts_unqueried_missing(collector: str, tmp_path: Path) -> None:
    """Read-back through a proxy that answers 5xx, hangs past the timeout, answers slowly, and
    never answers for a few ids: transient failures are retried and the answers used; an id whose
    last query never got an answer is *unknown*, whatever the truth behind it; only ids the
    backend answered for are found/partial/missing, and those match what the collector holds."""
    rng = random.Random(11)
    run = synthetic_run(tmp_path, collector, "flaky", rng)
    # Cursed: two complete traces, two with nothing stored (the ones a careless reader would
    # call missing), one reference trace.
    complete = [t for t in run.sampled if run.stored[t] == 3]
    absent = [t for t in run.sampled if run.stored[t] == 0]
    cursed = {*complete[:2], *absent[:2], run.reference[0]}
    proxy = FlakyProxy(collector, cursed, hang_s=0.8)
    threading.Thread(target=proxy.serve_forever, name="flaky-proxy", daemon=True).start()
    backend = ZipkinBackend(
        proxy.url,
        BackendOptions(bearer_token=TOKEN, timeout_s=0.3, retries=2, backoff_s=0.01, batch_size=20),
    )
    try:
        backend.check()
        summary, interrupted = read_back_and_reconcile(
            run.run_dir, run.run_id, backend, run.expect,
            quiet_s=0.3, poll_interval_s=0.1, max_wait_s=2.0, run_id_tag="loadgen.run_id",
            min_collection=0.99, load_end=time.time(), status=quiet,
        )  # fmt: skip
    finally:
        backend.close()
        proxy.close()
    assert not interrupted
    # Every failure mode was served, and retried: more attempts than distinct requests.
    assert {"503", "500", "hang", "slow", "cursed-503", "search-500"} <= set(proxy.served)
    assert sum(proxy.attempts.values()) > len(proxy.attempts)
    assert proxy.unauthorized == 0  # the token went with every request

    status = fetched_status(run.run_dir)
    assert set(status) == set(run.stored)
    for trace in cursed:
        assert status[trace] == "error"  # never answered: unknown, even the absent ones
    errors = {t for t, st in status.items() if st == "error"}
    # The backend answered for everything else; those answers are the truth.
    for trace, st in status.items():
        if st != "error":
            assert st == ("found" if run.stored[trace] else "missing"), trace

    mesh = summary["mesh"]
    sampled_errors = sum(1 for t in run.sampled if t in errors)
    answered_absent = sum(1 for t in run.sampled if run.stored[t] == 0 and t not in errors)
    answered_partial = sum(1 for t in run.sampled if run.stored[t] == 1 and t not in errors)
    modes = summary["modes"]["b3_multi_sampled"]
    assert mesh["unknown"] == modes["unknown"] == sampled_errors >= 4
    assert modes["missing"] == answered_absent  # the cursed absent ones are not among them
    assert modes["partial"] == mesh["partial"] == answered_partial
    assert mesh["collection"]["n"] + mesh["unknown"] == len(run.sampled)
    not_sampled = summary["modes"]["b3_multi_not_sampled"]
    assert not_sampled["missing"] == 0 and not_sampled["leaked"] == 0
    assert not_sampled["not_sampled"] + not_sampled["unknown"] == len(run.not_sampled)
    ref = summary["reference"]
    assert ref["unknown"] == sum(1 for t in run.reference if t in errors) >= 1
    assert ref["collection"]["n"] + ref["unknown"] == len(run.reference)
    assert ref["collection"]["n"] - ref["collection"]["k"] == sum(
        1 for t in run.reference if run.stored[t] == 0 and t not in errors
    )
    # Errors on the last poll: the read-back is not called stable, and the failed search is a note.
    assert summary["readback"]["stable"] is False
    assert any("run-tag search failed" in n for n in summary["notes"])
    # The proxy put the bearer token into its error bodies; none of it reached a file.
    for path in run.run_dir.iterdir():
        assert TOKEN not in path.read_text(), path.name
    assert TOKEN not in json.dumps(summary)


def test_interrupt_during_read_back_leaves_unknown_not_missing(collector: str, tmp_path: Path) -> None:
    """Ctrl-C in the middle of read-back (here: the second poll): what the first poll learned is
    kept, nothing is counted missing that was not answered, and the run says it was interrupted."""
    run = synthetic_run(tmp_path, collector, "intr", random.Random(5))

    class InterruptOnSecondPoll(ZipkinBackend):
        polls = 0

        def fetch_reduced(self, trace_ids: Any, reduce: Any, on_progress: Any = None) -> dict[str, Any]:
            type(self).polls += 1  # read-back asks once per poll
            if self.polls == 2:
                raise KeyboardInterrupt
            # The first poll sees only the first half of the ids answered; the rest fail.
            half = set(list(trace_ids)[: len(trace_ids) // 2])
            got = super().fetch_reduced([t for t in trace_ids if t in half], reduce, on_progress)
            failed = all_error([t for t in trace_ids if t not in half], "backend went away")
            return {**got, **{tid: reduce(answer) for tid, answer in failed.items()}}

    backend = InterruptOnSecondPoll(collector)
    try:
        summary, interrupted = read_back_and_reconcile(
            run.run_dir, run.run_id, backend, run.expect,
            quiet_s=5.0, poll_interval_s=0.05, max_wait_s=10.0, run_id_tag="loadgen.run_id",
            min_collection=0.99, load_end=time.time(), status=quiet,
        )  # fmt: skip
    finally:
        backend.close()
    assert interrupted
    assert any("interrupted" in n for n in summary["notes"])
    status = fetched_status(run.run_dir)
    answered = {t for t, st in status.items() if st != "error"}
    assert 0 < len(answered) < len(run.stored)
    modes = summary["modes"]["b3_multi_sampled"]
    assert modes["missing"] == sum(1 for t in run.sampled if t in answered and run.stored[t] == 0)
    assert modes["unknown"] == sum(1 for t in run.sampled if t not in answered) > 0
    assert modes["found"] == sum(1 for t in run.sampled if t in answered and run.stored[t] == 3)
    assert summary["tag_search"] is None  # no search after an interrupt


# --- hostile text, credentials, listening sockets -----------------------------------------------

API_KEY = "k3y-for-the-backend-0123456789"
HOSTILE_SERVICE = "<script>alert('svc')</script>\x07\u202e\"quoted\""
HOSTILE_TAGS = {
    "<b>tag</b>": "\"'`|\x00\x1b[2J<img src=x onerror=alert(1)>",
    "loadgen.note": "line\nbreak\r|x|",
}
# A run id is a folder name and an HTTP header value: no "/", no control characters (see the
# report of this test for the validation run.py lacks); everything else hostile is fair.
SAFE_RUN_ID = "hostile-data-run"
HOSTILE_RUN_ID = "\"><img src=x onerror=alert(1)>|`[bold]&amp;'"


class HostileProxy(ThreadingHTTPServer):
    """The collector's query API behind credentials (bearer token + X-Api-Key), answering every
    trace with one more span full of hostile text, and every search with a 500 whose body is
    hostile and reflects the credentials."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _HostileHandler)
        self.upstream = upstream
        self.lock = threading.Lock()
        self.authorized = 0
        self.unauthorized = 0
        self.client = httpx.Client(timeout=5.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.client.close()


class _HostileHandler(_FlakyHandler):
    server: HostileProxy  # type: ignore[assignment]

    def do_GET(self) -> None:
        srv = self.server
        auth, key = self.headers.get("Authorization", ""), self.headers.get("X-Api-Key", "")
        ok = auth == f"Bearer {TOKEN}" and key == API_KEY
        with srv.lock:
            srv.authorized += ok
            srv.unauthorized += not ok
        if not ok:
            self._send(401, b"credentials required")
            return
        path = urlsplit(self.path).path
        if path.endswith("/traces"):
            body = f"<script>alert(1)</script>\x1b[31m|x| credentials {auth} {key}".encode()
            self._send(500, body)
            return
        resp = srv.client.get(srv.upstream + self.path)
        body = resp.content
        if resp.status_code == 200 and ("/traceMany" in path or "/trace/" in path):
            data = resp.json()
            traces = data if "/traceMany" in path else [data]
            # Only to traces already complete: an extra span must not complete a trace early
            # (see test_read_back_completes_a_trace_only_with_its_expected_services).
            for trace in (t for t in traces if len(t) >= 3):
                trace.append(
                    {
                        "traceId": trace[0]["traceId"],
                        "id": "00000000000000ff",
                        "localEndpoint": {"serviceName": HOSTILE_SERVICE},
                        "tags": HOSTILE_TAGS,
                    }
                )
            body = json.dumps(traces if "/traceMany" in path else traces[0]).encode()
        self._send(resp.status_code, body, resp.headers.get("content-type", "application/json"))


@pytest.fixture(scope="module")
def shared_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMesh]:
    workdir = tmp_path_factory.mktemp("shared-mesh")
    mesh = EmbeddedMesh(workdir, MeshConfig(tracing=TracingConfig(sampling_percent=100.0))).start()
    try:
        yield mesh
    finally:
        mesh.stop()
    assert leftover_processes(str(workdir)) == []


UNESCAPED_LT = re.compile(r"(?<!\\)<")
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def assert_markdown_safe(report: str) -> None:
    """No raw HTML, no control characters, and every table row has its table's column count."""
    assert not UNESCAPED_LT.search(report), UNESCAPED_LT.search(report)
    bad = [ch for ch in report if not ch.isprintable() and ch != "\n"]
    assert not bad, bad
    columns = None
    for line in report.splitlines():
        if line.startswith("|"):
            n = len(UNESCAPED_PIPE.findall(line))
            columns = n if columns is None else columns
            assert n == columns, line
        else:
            columns = None


def strict_json(text: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=no_constants)


def test_hostile_text_is_escaped_and_credentials_never_written(
    shared_mesh: EmbeddedMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real run whose run id, spans (service names, tags with quotes, <script>, control
    characters) and backend error text are hostile, read through a backend that needs a bearer
    token and an API key from the environment: report.md shows all of it escaped, summary.json
    and fetched.jsonl stay strict JSON, the terminal tables do not read it as markup, and neither
    credential is in any file of the run folder, although the backend reflected both."""
    monkeypatch.setenv("LOADGEN_BACKEND_TOKEN", TOKEN)
    monkeypatch.setenv("LOADGEN_BACKEND_HEADERS", f"X-Api-Key: {API_KEY}")
    # A hostile run id never gets as far as a report: it is refused before anything is written.
    with pytest.raises(RunError):
        execute_run(external_options(shared_mesh, tmp_path, HOSTILE_RUN_ID, max_requests=10), quiet)
    assert list(tmp_path.iterdir()) == []
    proxy = HostileProxy(shared_mesh.collector_url)
    threading.Thread(target=proxy.serve_forever, name="hostile-proxy", daemon=True).start()
    try:
        opts = external_options(shared_mesh, tmp_path, SAFE_RUN_ID, max_requests=150, reference_rate=10.0)
        opts.backend = f"zipkin:{proxy.url}"
        result = execute_run(opts, quiet)
    finally:
        proxy.close()
    assert proxy.authorized > 0 and proxy.unauthorized == 0
    run_dir = result.run_dir
    assert run_dir == tmp_path / SAFE_RUN_ID

    summary = strict_json((run_dir / "summary.json").read_text())
    assert summary["run_id"] == SAFE_RUN_ID
    assert summary["mesh"]["collection"]["k"] == summary["mesh"]["collection"]["n"] > 0
    assert any("run-tag search failed" in n and "<script>" in n for n in summary["notes"])
    services = set()
    for line in (run_dir / "fetched.jsonl").read_text().splitlines():
        services.update(strict_json(line)["services"])
    assert HOSTILE_SERVICE.lower() in services  # the hostile data did flow through

    report = (run_dir / "report.md").read_text()
    assert_markdown_safe(report)
    assert "run-tag search failed" in report
    assert "\\<script\\>" in report  # the backend's reflected error text, escaped
    console = Console(file=io.StringIO(), width=200, color_system=None)
    for table in render_terminal(summary):
        console.print(table)  # no markup error from span-derived text

    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            assert TOKEN not in text and API_KEY not in text, path.relative_to(run_dir)


def test_credentials_from_flags_and_url_are_not_written_to_run_json() -> None:
    """`--backend zipkin:http://user:pw@host` and `--backend-header 'Authorization: ...'` are
    as secret as LOADGEN_BACKEND_TOKEN: run.json must not carry them."""
    opts = RunOptions(
        backend=f"zipkin:http://loadgen:{TOKEN}@127.0.0.1:9411",
        backend_flags={"headers": {"X-Api-Key": API_KEY, "Authorization": f"Bearer {TOKEN}"}},
    )
    written = json.dumps(_options_dict(opts))
    assert TOKEN not in written and API_KEY not in written


def test_a_run_id_cannot_escape_the_output_folder(tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9"
    with pytest.raises(RunError):
        execute_run(
            RunOptions(
                run_id="../escaped", output_dir=tmp_path / "out", gateway=dead, backend=f"zipkin:{dead}"
            ),
            quiet,
        )
    assert not (tmp_path / "escaped").exists()


def test_a_run_id_the_tag_search_cannot_express_is_a_note_not_a_crash(collector: str, tmp_path: Path) -> None:
    run = synthetic_run(tmp_path, collector, "x and y", random.Random(3))
    backend = ZipkinBackend(collector)
    try:
        summary, _ = read_back_and_reconcile(
            run.run_dir, run.run_id, backend, run.expect,
            quiet_s=0.0, poll_interval_s=0.05, max_wait_s=2.0, run_id_tag="loadgen.run_id",
            min_collection=0.99, load_end=time.time(), status=quiet,
        )  # fmt: skip
    finally:
        backend.close()
    assert any("run-tag search" in n for n in summary["notes"])


def _listening_sockets() -> dict[int, tuple[str, int, str]]:
    """inode -> (address, port, proto) of every listening TCP socket and bound UDP socket."""
    out: dict[int, tuple[str, int, str]] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/net") / proto
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if proto.startswith("tcp") and state != "0A":  # 0A = LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out[inode] = (str(ipaddress.ip_address(raw)), int(hex_port, 16), proto)
    return out


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def test_every_mesh_process_listens_on_loopback_only(shared_mesh: EmbeddedMesh) -> None:
    """Spans carry request data: no process of the embedded mesh may be reachable from another
    machine. Every listening TCP socket (and bound UDP socket) of every mesh process, found via
    /proc/<pid>/fd and /proc/net/{tcp,tcp6,udp,udp6}, is on a loopback address."""
    procs: dict[str, int] = {}
    for name, part in vars(shared_mesh).items():
        proc = part.process if isinstance(part, EnvoyProcess) else part
        if isinstance(proc, ManagedProcess) and proc.pid is not None:
            assert proc.alive(), name
            procs[name] = proc.pid
    assert {"collector", "echo", "sidecar", "gateway"} <= set(procs)
    sockets = _listening_sockets()
    seen: dict[str, list[tuple[str, int, str]]] = {}
    for name, pid in procs.items():
        mine = [sockets[i] for i in _socket_inodes(pid) if i in sockets]
        seen[name] = mine
        for address, port, proto in mine:
            ip = ipaddress.ip_address(address)
            # grpcio binds 127.0.0.1 as a tcp6 socket on the IPv4-mapped ::ffff:127.0.0.1, which
            # accepts 127.0.0.1 only; ipaddress calls the mapped form not loopback, so unwrap it.
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            assert ip.is_loopback, (name, address, port, proto)
    # Not vacuous: the collector and echo listen once each, each Envoy on its admin and listener.
    assert len(seen["collector"]) >= 1 and len(seen["echo"]) >= 1, seen
    assert len(seen["gateway"]) >= 2 and len(seen["sidecar"]) >= 2, seen
    gateway_port = int(shared_mesh.gateway_url.rsplit(":", 1)[1])
    assert ("127.0.0.1", gateway_port, "tcp") in seen["gateway"]


class _ScriptedBackend(ZipkinBackend):
    """Answers trace ids from `script[poll]` (the last entry repeats): spans arriving over time."""

    def __init__(self, script: list[dict[str, list[dict[str, Any]]]]) -> None:
        super().__init__("http://127.0.0.1:9")
        self.script = script
        self.polls = 0

    fetch_reduced = TraceBackend.fetch_reduced  # the generic one, built on fetch_many below

    def fetch_many(self, trace_ids: Any, on_progress: Any = None) -> dict[str, Any]:
        answer = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        return assign(list(trace_ids), [span for t in trace_ids for span in answer.get(t, [])])


def _arriving_sidecar_span(trace: str) -> list[dict[str, list[dict[str, Any]]]]:
    """Poll 1: both gateway spans and a span of an unexpected service (3 spans, the expected
    count); from poll 2 on the sidecar span is there too."""
    early = [
        zipkin_span(trace, 0, GATEWAY_SERVICE, "SERVER", "r", 1),
        zipkin_span(trace, 1, GATEWAY_SERVICE, "CLIENT", "r", 2),
        zipkin_span(trace, 3, "an-extra-hop", "SERVER", "r", 3),
    ]
    return [{trace: early}, {trace: [*early, zipkin_span(trace, 2, SIDECAR_SERVICE, "SERVER", "r", 4)]}]


def test_read_back_completes_a_trace_only_with_its_expected_services() -> None:
    """Found three spans, but one is from another service: read-back must keep asking until the
    sidecar span arrives, or the reconciler (which wants the services too) reports it partial."""
    trace = "ab" * 16
    expect = Expectation(3, (GATEWAY_SERVICE, SIDECAR_SERVICE), 100.0)
    rec = {"status": 200, "up_trace": trace, "up_flag": "1", "mode": "b3_multi_sampled"}
    outcomes = {}
    for label, services in (("count only", None), ("with services", {trace: expect.services})):
        backend = _ScriptedBackend(_arriving_sidecar_span(trace))
        res = read_back(
            backend, {trace: 3}, quiet_s=0.2, poll_interval_s=0.01, max_wait_s=2.0, expected_services=services
        )
        backend.close()
        outcomes[label] = classify(upstream_decision(rec), res.observations[trace], expect)
    assert outcomes["with services"] is Outcome.FOUND
    assert outcomes["count only"] is Outcome.PARTIAL  # why the services must be passed


def test_the_run_read_back_waits_for_the_expected_services(tmp_path: Path) -> None:
    trace = "cd" * 16
    run_dir = tmp_path / "svc"
    run_dir.mkdir()
    rec = {
        "ts": time.time(),
        "status": 200,
        "mode": "b3_multi_sampled",
        "inj_trace": trace,
        "up_trace": trace,
        "up_flag": "1",
    }
    (run_dir / "ledger.jsonl").write_text(json.dumps(rec) + "\n")
    backend = _ScriptedBackend(_arriving_sidecar_span(trace))
    summary, _ = read_back_and_reconcile(
        run_dir, "svc", backend, Expectation(3, (GATEWAY_SERVICE, SIDECAR_SERVICE), 100.0),
        quiet_s=0.2, poll_interval_s=0.01, max_wait_s=2.0, run_id_tag="",
        min_collection=0.99, load_end=time.time(), status=quiet,
    )  # fmt: skip
    backend.close()
    assert summary["mesh"]["collection"]["k"] == 1
