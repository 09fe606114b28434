"""The load phase of a run: Locust in its own process and the side-emitter, watched every
second, stopped in order."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.analysis.reconcile import upstream_decision
from loadgen.emitter import ReferenceEmitter
from loadgen.failure import ComponentFailure, disk_problem, locust_failure, log_tail, mentions_disk_full
from loadgen.ledger import LedgerTail, LiveCounts
from loadgen.mesh.expect import Decision
from loadgen.mesh.modes import mode_spec
from loadgen.mesh.tracer import TracerFamily
from loadgen.redact import redact_text
from loadgen.run.options import RunError, RunOptions, Status
from loadgen.run.target import OpenTarget
from loadgen.run.webui import WebUi, free_port, web_argv, web_env, web_test_started, web_test_stopped, web_url
from loadgen.stack.mesh import EmbeddedMesh
from loadgen.stack.procs import ComponentDied, StackError, die_with_parent
from loadgen.traffic.locustfile_paths import GATEWAY_USERINFO_ENV, MESH, locustfile_path
from loadgen.userinfo import split_userinfo


def default_scenario_path() -> str:
    """The packaged locustfile `loadgen run` uses without --scenario (scenarios/mesh.py in a checkout)."""
    return str(locustfile_path(MESH))


def _locust_argv(opts: RunOptions, run_dir: Path) -> list[str]:
    scenario = opts.scenario or default_scenario_path()
    distributed: list[str] = []
    if opts.processes > 1:
        # Local worker processes forked by Locust; the master writes the one ledger. Its message
        # channel listens on loopback on a free port (Locust's default is *:5557).
        port = str(free_port())
        distributed = [
            "--processes", str(opts.processes),
            "--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--master-port", port,
        ]  # fmt: skip
    elif opts.expect_workers:
        distributed = [
            "--master", "--expect-workers", str(opts.expect_workers),
            "--master-bind-host", opts.master_bind_host, "--master-bind-port", str(opts.master_bind_port),
        ]  # fmt: skip
    headless = [
        "--headless", "-t", f"{max(1, round(opts.duration_s))}s", "--only-summary",
        "--json-file", str(run_dir / "locust"),
    ]  # fmt: skip
    return [
        sys.executable, "-m", "locust",
        "-f", scenario,
        *(web_argv(opts.web_host, opts.web_port) if opts.web else headless),
        "-u", str(opts.users),
        "-r", str(opts.spawn_rate),
        "--stop-timeout", "5",
        "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
        *(["--csv", opts.csv_prefix] if opts.csv_prefix else []),
        *distributed,
    ]  # fmt: skip


class _Abort(Exception):
    """A safety bound tripped (RunOptions.on_tick returned a reason)."""


class _Failed(Exception):
    """A component of the run failed during the load (exit 4, partial report)."""

    def __init__(self, failure: ComponentFailure) -> None:
        super().__init__(failure.headline())
        self.failure = failure


def _mesh_failure(exc: StackError) -> ComponentFailure:
    """The embedded mesh's failure, with the dead process's last log lines when it names one."""
    if isinstance(exc, ComponentDied):
        return ComponentFailure(exc.component, exc.reason, str(exc.log_path), log_tail(exc.log_path))
    return ComponentFailure("embedded mesh", str(exc))


def _live_line(elapsed_s: float, live: LiveCounts, ref: Any, configured: float | None = None) -> str:
    """The live view in the terminal: counts so far, and the share of the decision-free requests
    (the proxy decides: none, *_no_flag) the upstream saw sampled, next to the configured rate;
    the share over every mode (forced ones too) is labelled as such."""
    free = [counts for m, counts in live.by_mode.items() if _proxy_decides(m)]
    free_n = sum(n for n, _s in free)
    modes = " ".join(f"{m}:{n}" for m, (n, _s) in sorted(live.by_mode.items()))
    sampled = ""
    if free_n:
        sampled = f"  decision-free sampled {100 * sum(s for _n, s in free) / free_n:.1f}%"
        sampled += f" (configured {configured:g}%)" if configured is not None else ""
    if live.sampled_fraction is not None:
        sampled += f"  all modes sampled {live.sampled_fraction:.1%}"
    return (
        f"{elapsed_s:5.0f} s  requests {live.requests} (errors {live.errors})"
        + sampled
        + (f"  reference {ref.traces_started} (failed {ref.traces_failed})" if ref else "")
        + (f"  [{modes}]" if modes else "")
    )


def _proxy_decides(mode: str) -> bool:
    spec = mode_spec(mode)
    return spec is not None and spec.decision is Decision.PROXY


_LOCUST_ERROR = re.compile(r"/ERROR/[^:]*: (.+)$")


def no_requests_note(locust_log: Path, duration_s: float) -> str:
    """Why a run made no request, for its notes: the last error Locust logged (a user whose task
    raises before sending logs a traceback per attempt and writes no ledger record)."""

    last = ""
    try:
        with open(locust_log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - (1 << 16)))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        tail = ""
    for line in tail.splitlines():
        found = _LOCUST_ERROR.search(line)
        if found:
            last = found.group(1).strip()
    said = f"Locust's last error: {redact_text(last)[:300]!r}" if last else "Locust logged no error"
    return (
        f"no request was made in {duration_s:g} s of load: the ledger holds no record ({said}; see "
        f"{locust_log.name} in the run folder)"
    )


@dataclass
class LoadOutcome:
    """How the load phase ended: `partial_reason` empty when it ran to its end, `failure` when a
    component failed (exit 4), and notes about stopping it."""

    partial_reason: str = ""
    failure: ComponentFailure | None = None
    notes: list[str] = field(default_factory=list)
    web: WebUi | None = None  # --web: Locust's web UI, left running after the test stopped


def locust_env(opts: RunOptions, run_id: str, gateway: str, host: str, ledger_path: Path,
               configured: float | None) -> dict[str, str]:  # fmt: skip
    """The locustfile's settings (LOADGEN_*), and the gateway in LOCUST_HOST."""
    # Not `--host`: a gateway URL's credentials would show in every `ps` listing. Nor in
    # LOCUST_HOST: Locust shows its host in the web UI (`run --web`), so the user-info travels
    # apart and the user sends it as basic auth (loadgen.traffic.user).
    bare, userinfo = split_userinfo(gateway)
    env = {
        "LOCUST_HOST": bare,
        **({GATEWAY_USERINFO_ENV: userinfo} if userinfo else {}),
        "LOADGEN_RUN_ID": run_id,
        "LOADGEN_LEDGER": str(ledger_path),
        "LOADGEN_HOST_HEADER": host,
        "LOADGEN_MIX": opts.mix,
        "LOADGEN_RATE": str(opts.rate),
        "LOADGEN_USERS": str(opts.users),  # workers share the rate by the run's users, not their own
        "LOADGEN_PATH": opts.path,
    }
    if opts.seed is not None:
        env["LOADGEN_SEED"] = str(opts.seed)
    if opts.max_requests:
        env["LOADGEN_MAX_REQUESTS"] = str(opts.max_requests)
    if configured is not None:
        env["LOADGEN_XRID_PERCENT"] = str(configured)  # crafted x-request-ids aim at this rule
    if opts.id_style != "random":
        env["LOADGEN_ID_STYLE"] = opts.id_style
    if opts.xrid_sampled_fraction is not None:
        env["LOADGEN_XRID_SAMPLED_FRACTION"] = str(opts.xrid_sampled_fraction)
    if opts.tracing.tracer is not TracerFamily.ZIPKIN:
        env["LOADGEN_TRACER"] = opts.tracing.tracer.value  # where the sampled fact is read
    if opts.web:
        env.update(web_env(ledger_path.parent))
    env.update(opts.extra_env)
    return env


def _configured(opts: RunOptions) -> float | None:
    """The sampling percent the live line compares with: --expect, else the embedded mesh's."""
    if opts.expect_percent is not None:
        return opts.expect_percent
    return None if opts.gateway else opts.tracing.sampling_percent


def _watch(
    locust: subprocess.Popen[bytes], opts: RunOptions, run_dir: Path, mesh: EmbeddedMesh | None,
    tail: LedgerTail, emitter: ReferenceEmitter | None, started_at: float, status: Status,
    until: Callable[[], bool] = lambda: False,
) -> None:  # fmt: skip
    """Until Locust exits (or `until()`): every second check the mesh and the disk, show the live
    counts, and ask the on_tick hook; raises what stops the load early."""
    while locust.poll() is None and not until():
        time.sleep(1.0)
        if mesh is not None:
            mesh.check_alive()
        disk = disk_problem(run_dir)
        if disk:
            raise _Failed(ComponentFailure("disk", disk))
        live = tail.poll()
        ref = emitter.counters() if emitter else None
        status(_live_line(time.time() - started_at, live, ref, _configured(opts)))
        if opts.on_tick is not None:
            reason = opts.on_tick(live, time.time() - started_at)
            if reason:
                raise _Abort(reason)


def _stopped_early(exc: BaseException) -> tuple[str, ComponentFailure | None]:
    """(partial reason, failed component) of what stopped the load early."""
    if isinstance(exc, _Abort):
        return f"aborted: {exc}", None
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", None
    failure = (
        _mesh_failure(exc)
        if isinstance(exc, StackError)
        else exc.failure
        if isinstance(exc, _Failed)
        else None
    )
    assert failure is not None
    return failure.headline(), failure


def _after_locust(outcome: LoadOutcome, returncode: int | None, run_dir: Path) -> None:
    """Locust's own failure (its exit code), or a full disk its log mentions."""
    if returncode not in (0, None) and not outcome.partial_reason:
        outcome.failure = locust_failure(returncode, run_dir / "locust.log")
        outcome.partial_reason = outcome.failure.headline()
    elif outcome.failure is None and mentions_disk_full(log_tail(run_dir / "locust.log")):
        outcome.failure = ComponentFailure(
            "disk", "no space left on device while Locust wrote the ledger", str(run_dir / "locust.log"),
            log_tail(run_dir / "locust.log"),
        )  # fmt: skip
        outcome.partial_reason = outcome.failure.headline()


def reference_grpc_endpoint(opts: RunOptions, opened: OpenTarget) -> str | None:
    """Where otlp-grpc reference spans go: --reference-grpc-endpoint, else the embedded collector's
    OTLP/gRPC URL, else (an existing mesh) None: the emitter takes the --collector host on 4317."""
    if opts.reference_grpc_endpoint or opts.reference_protocol != "otlp-grpc":
        return opts.reference_grpc_endpoint or None
    if opened.mesh is None:
        return None
    url = opened.mesh.collector_grpc_url
    if not url:  # never 127.0.0.1:4317, which may be anything on this machine
        raise RunError("--reference-protocol otlp-grpc: the embedded collector announced no OTLP/gRPC port")
    return url


def _wait_for_locust(locust: subprocess.Popen[bytes], outcome: LoadOutcome) -> None:
    try:
        locust.wait(timeout=30)
    except subprocess.TimeoutExpired:
        locust.kill()
        locust.wait()
        outcome.notes.append(
            "Locust did not stop within 30 s and was killed; the last ledger lines may be missing"
        )


def _wait_for_web_test(locust: subprocess.Popen[bytes], mesh: EmbeddedMesh | None, run_dir: Path) -> float:
    """--web: until a test starts in the web UI (or Locust ends), checking the mesh; its start."""
    while locust.poll() is None and not web_test_started(run_dir):
        time.sleep(0.2)
        if mesh is not None:
            mesh.check_alive()
    return time.time()


def run_load(
    opts: RunOptions, run_dir: Path, run_id: str, opened: OpenTarget, configured: float | None,
    started_at: float, status: Status,
) -> LoadOutcome:  # fmt: skip
    """The load: the side-emitter and Locust (in its own process) until the duration ends, a
    component fails, a safety bound trips or Ctrl-C; Locust always stops in order (its ledger
    flushed) and the emitter accounts for every trace."""
    outcome = LoadOutcome()
    ledger_path = run_dir / "ledger.jsonl"
    emitter = None
    if opened.collector and opts.reference_rate > 0:
        emitter = ReferenceEmitter(
            opened.collector, run_id, run_dir / "reference.jsonl",
            rate_per_s=opts.reference_rate, children=opts.reference_children,
            protocol=opts.reference_protocol, grpc_endpoint=reference_grpc_endpoint(opts, opened),
            service_name=opts.reference_service, headers=opts.reference_headers,
        )  # fmt: skip
    env = locust_env(opts, run_id, opened.gateway, opened.host, ledger_path, configured)
    url = web_url(opts.web_host, opts.web_port)
    status(
        f"web UI at {url}: start a test there; stopping it reads the traces back"
        if opts.web
        else f"load: {opts.users} users for {opts.duration_s:g} s"
        + (f" at {opts.rate:g} req/s" if opts.rate else "")
    )
    locust_log = open(run_dir / "locust.log", "ab")  # noqa: SIM115
    locust = subprocess.Popen(
        _locust_argv(opts, run_dir),
        stdin=subprocess.DEVNULL,
        stdout=locust_log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        start_new_session=True,  # Ctrl-C reaches us; we stop Locust in order
        preexec_fn=die_with_parent,
    )
    tail = LedgerTail(ledger_path, functools.partial(upstream_decision, tracer=opts.tracing.tracer))
    try:
        if opts.web:
            started_at = _wait_for_web_test(locust, opened.mesh, run_dir)
        if emitter is not None:
            emitter.start()
        stopped_in_ui = functools.partial(web_test_stopped, run_dir) if opts.web else lambda: False
        _watch(locust, opts, run_dir, opened.mesh, tail, emitter, started_at, status, stopped_in_ui)
        if opts.web and locust.poll() is None:  # its Tracing tab shows the read-back's result
            outcome.web = WebUi(locust, locust_log, url)
    except (KeyboardInterrupt, StackError, _Abort, _Failed) as exc:
        outcome.partial_reason, outcome.failure = _stopped_early(exc)
        status(f"stopping load ({outcome.partial_reason}); flushing the ledger")
        if locust.poll() is None:
            locust.send_signal(signal.SIGTERM)
    finally:
        if outcome.web is None:
            _wait_for_locust(locust, outcome)
            locust_log.close()
        if emitter is not None:
            counters = emitter.stop()
            status(f"reference emitter stopped: {counters.traces_started} traces started")
    _after_locust(outcome, locust.returncode, run_dir)
    return outcome
