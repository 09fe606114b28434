"""`loadgen run`: the orchestration of one load run (plain I/O; the CLI prints and exits).

    preflight -> [embedded mesh up] -> side-emitter + Locust -> stop -> read-back (poll until quiet)
              -> reconcile -> summary.json, report.md, fetched.jsonl -> [mesh down]

Locust runs in its own process (it monkey-patches with gevent); this process never imports it.
Ctrl-C / SIGTERM stops the load cleanly: Locust flushes the ledger, the emitter accounts for
every trace, and a partial report is written that says it is partial.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import msgspec

from loadgen import __version__
from loadgen.analysis.integrity import downstream_service, fold_integrity, search_hop_traces
from loadgen.analysis.reconcile import (
    Expectation,
    TraceObservation,
    ledger_trace_id,
    reconcile_mesh,
    reconcile_reference,
    upstream_decision,
)
from loadgen.analysis.tagsearch import estimate_from_tags, search_run
from loadgen.analysis.verdicts import DEFAULT_MAX_ERROR_RATE, exit_code_for
from loadgen.analysis.windows import windows_summary
from loadgen.backends.base import BackendError, BackendOptions, TraceBackend, redact_url
from loadgen.backends.factory import parse_backend_spec
from loadgen.emitter import ReferenceEmitter, read_reference_log, summarize_reference_log
from loadgen.exitcodes import EXIT_COMPONENT_FAILED, EXIT_VERDICT_FAILED
from loadgen.failure import ComponentFailure, disk_problem, locust_failure, log_tail, mentions_disk_full
from loadgen.ledger import LedgerStats, LedgerTail, LiveCounts, read_ledger
from loadgen.mesh.expect import ExpectationContext
from loadgen.mesh.headers import RUN_ID_HEADER
from loadgen.mesh.hops import Hop
from loadgen.mesh.ids import normalize_trace_id
from loadgen.mesh.modes import DEFAULT_MIX, format_mix, parse_mix
from loadgen.mesh.profile import (
    PROFILE_FILE,
    RUN_ID_TAG_ADVICE,
    MeshProfile,
    ProfileError,
    declaration_warnings,
    expectation_context,
    expectation_gaps,
    flags_profile,
    load_profile,
    profile_line,
    resolved_shape,
    suggested_quiet_s,
)
from loadgen.probe import ProbeError, probe_mesh
from loadgen.readback import ReadBackResult, read_back, time_to_queryable
from loadgen.redact import redact_text
from loadgen.report.html import render_run_folder
from loadgen.report.render import render_markdown
from loadgen.runfiles import write_fetched, write_json
from loadgen.runfolder import (
    RunMeta,
    discard_empty,
    keep_previous,
    locust_totals,
    new_dirs,
    read_previous_summary,
    read_run_json,
    rebuilt_fields,
)
from loadgen.stack.envoy import TracingConfig
from loadgen.stack.mesh import (
    GATEWAY_HOST,
    CollectorFaults,
    EmbeddedMesh,
    MeshConfig,
    UpstreamFaults,
)
from loadgen.stack.procs import ComponentDied, ManagedProcess, StackError, die_with_parent, python_module_argv
from loadgen.summary.build import KEPT_BY_VERIFY, Measured, RunFacts, build_summary
from loadgen.summary.model import Summary, Target
from loadgen.traffic.locustfile_paths import MESH, locustfile_path


class RunError(RuntimeError):
    """The run cannot proceed (bad configuration, unreachable target); the message says why."""


@dataclass
class RunOptions:
    run_id: str = ""
    output_dir: Path = Path("reports")
    duration_s: float = 10.0
    users: int = 10
    spawn_rate: float = 10.0
    rate: float = 0.0
    mix: str = field(default_factory=lambda: format_mix(DEFAULT_MIX))
    scenario: str = ""
    path: str = "/headers"  # /fanout: a second hop through the sidecar (propagation integrity)
    fanout: bool = True  # embedded mesh: run the second hop (backend sidecar + echo)
    seed: int | None = None
    max_requests: int = 0  # stop after this many requests (0 = run for duration_s)
    id_style: str = "random"  # trace ids: random | k6 (time-prefixed, like k6's)
    xrid_sampled_fraction: float | None = None  # crafted x-request-ids: share predicted sampled
    processes: int = 1  # Locust worker processes on this machine (>1: master + N workers)
    expect_workers: int = 0  # >0: be a master and wait for this many `loadgen worker`s
    master_bind_host: str = "*"
    master_bind_port: int = 5557
    # Hooks for jobs built on a run (capacity, calibration):
    extra_env: dict[str, str] = field(default_factory=dict)  # more LOADGEN_* for the locustfile
    on_tick: Callable[[LiveCounts, float], str | None] | None = None  # returns a reason to abort
    # the embedded mesh (used when gateway is empty)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    faults: CollectorFaults = field(default_factory=CollectorFaults)
    upstream: UpstreamFaults = field(default_factory=UpstreamFaults)
    # an existing mesh
    gateway: str = ""
    host: str = GATEWAY_HOST
    collector: str = ""
    backend: str = ""
    backend_flags: dict[str, Any] = field(default_factory=dict)  # BackendOptions fields from flags
    search_service: str | None = (
        None  # Jaeger's search needs a service (e.g. istio-ingressgateway.istio-system)
    )
    expect_percent: float | None = None
    expected_spans: int | None = None  # overrides the probed shape's span count (with a warning)
    # side-emitter
    reference_rate: float = 50.0  # >= 400 reference traces in 10 s: enough for a Wilson pass at 0.99
    reference_children: int = 2
    # the mesh profile (loadgen.probe): learned by a probe before the load, or read from a file
    probe: bool = True
    profile_path: Path | None = None
    # read-back
    quiet_s: float | None = None  # None: from the profile's time to queryable
    poll_interval_s: float = 1.0
    max_wait_s: float = 60.0
    min_collection: float = 0.99
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE  # load_delivered fails above this share of errors

    def resolved_run_id(self) -> str:
        if not self.run_id:
            self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        return self.run_id


@dataclass
class RunResult:
    summary: dict[str, Any]
    run_dir: Path
    exit_code: int


Status = Callable[[str], None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def default_scenario_path() -> str:
    """The packaged locustfile `loadgen run` uses without --scenario (scenarios/mesh.py in a checkout)."""
    return str(locustfile_path(MESH))


def _locust_argv(opts: RunOptions, run_dir: Path) -> list[str]:
    scenario = opts.scenario or default_scenario_path()
    distributed: list[str] = []
    if opts.processes > 1:
        # Local worker processes forked by Locust; the master writes the one ledger. Its message
        # channel listens on loopback on a free port (Locust's default is *:5557).
        port = str(_free_port())
        distributed = [
            "--processes", str(opts.processes),
            "--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--master-port", port,
        ]  # fmt: skip
    elif opts.expect_workers:
        distributed = [
            "--master", "--expect-workers", str(opts.expect_workers),
            "--master-bind-host", opts.master_bind_host, "--master-bind-port", str(opts.master_bind_port),
        ]  # fmt: skip
    return [
        sys.executable, "-m", "locust",
        "-f", scenario,
        "--headless",
        "-u", str(opts.users),
        "-r", str(opts.spawn_rate),
        "-t", f"{max(1, round(opts.duration_s))}s",
        "--only-summary",
        "--json-file", str(run_dir / "locust"),
        "--stop-timeout", "5",
        "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
        *distributed,
    ]  # fmt: skip


_RUN_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}")


def check_run_id(run_id: str) -> None:
    """A run id names a folder and travels in an HTTP header and a span tag: keep it to a safe
    alphabet (no path separators, no '..', no spaces or control characters)."""
    if not _RUN_ID_OK.fullmatch(run_id) or ".." in run_id:
        raise RunError(
            f"run id {run_id!r} is not usable: use letters, digits and . _ : @ + = - "
            "(up to 128 characters, not starting with a dot or dash)"
        )


def check_path(path: str) -> None:
    """The request path is appended to the gateway's address: without a leading '/' every request
    goes to another port or host (`http://gw:8080` + `headers`), so no request is ever answered."""
    if not path.startswith("/"):
        raise RunError(f"--path {path!r} must start with '/' (e.g. /headers, /fanout)")


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


def _live_line(elapsed_s: float, live: LiveCounts, ref: Any) -> str:
    """The live view in the terminal: counts so far and the sampled fraction the upstream saw."""
    frac = live.sampled_fraction
    modes = " ".join(f"{m}:{n}" for m, (n, _s) in sorted(live.by_mode.items()))
    return (
        f"{elapsed_s:5.0f} s  requests {live.requests} (errors {live.errors})"
        + (f"  sampled {frac:.1%}" if frac is not None else "")
        + (f"  reference {ref.traces_started} (failed {ref.traces_failed})" if ref else "")
        + (f"  [{modes}]" if modes else "")
    )


def learn_profile(
    opts: RunOptions, gateway: str, host: str, backend: TraceBackend, run_id: str, status: Status
) -> MeshProfile:
    """The mesh profile of this run: `--profile FILE`, else the probe (run id `<run-id>-probe`),
    else (`--no-probe`) only what flags declare. The backend's trace route is checked with a
    random id in every case: it must answer with the backend's own "not found"."""
    if opts.profile_path is not None:
        try:
            profile = load_profile(opts.profile_path)
        except ProfileError as exc:
            raise RunError(str(exc)) from exc
        status(f"mesh profile from {opts.profile_path}")
    elif opts.probe:
        try:
            return probe_mesh(
                gateway, host, backend, f"{run_id}-probe", path=opts.path, status=status, seed=opts.seed
            )
        except ProbeError as exc:
            raise RunError(f"the mesh probe failed: {exc}") from exc
    else:
        profile = flags_profile(opts.path, opts.expected_spans)
    try:
        backend.check_trace_route()
    except BackendError as exc:
        raise RunError(str(exc)) from exc
    return profile


def preflight(gateway: str, host: str, collector: str | None, backend: TraceBackend) -> list[str]:
    """Check every external part before load starts; raise RunError naming the broken one."""
    notes: list[str] = []
    try:
        resp = httpx.get(f"{gateway.rstrip('/')}/headers", headers={"Host": host}, timeout=5.0)
    except httpx.HTTPError as exc:
        raise RunError(
            f"gateway {redact_url(gateway)} is unreachable: {redact_text(repr(exc))}. "
            "Check --gateway (scheme, host, port)."
        ) from exc
    if resp.status_code == 404:
        notes.append(
            f"gateway answered 404 for Host {host}: check --host matches a route (VirtualService hosts)"
        )
    try:
        echoed = resp.json().get("headers")
    except ValueError:
        echoed = None
    if not isinstance(echoed, dict):
        notes.append(
            "the upstream does not echo request headers (httpbin /headers): per-request decisions are unknown, "
            "so the decision rate and mesh collection cannot be measured per request"
        )
    if collector:
        try:
            post = httpx.post(f"{collector.rstrip('/')}/api/v2/spans", json=[], timeout=5.0)
        except httpx.HTTPError as exc:
            raise RunError(
                f"collector {redact_url(collector)} is unreachable: {redact_text(repr(exc))}. Check --collector."
            ) from exc
        if post.status_code != 202:
            raise RunError(
                f"collector {redact_url(collector)} answered {post.status_code} to POST /api/v2/spans (want 202): "
                "is it a Zipkin v2 endpoint (Jaeger's Zipkin receiver listens on 9411)?"
            )
    try:
        backend.check()
    except BackendError as exc:
        raise RunError(str(exc)) from exc
    return notes


@dataclass
class OpenTarget:
    """The mesh a run measures, opened: the embedded one started, or an existing one checked."""

    kind: str  # embedded | external
    gateway: str
    host: str
    collector: str
    backend: TraceBackend
    backend_spec: str
    fallback_quiet_s: float  # read-back's quiet period when the profile has no time to queryable
    hops: tuple[Hop, ...] | None
    configured: float | None
    mesh: EmbeddedMesh | None = None
    notes: list[str] = field(default_factory=list)


def open_target(opts: RunOptions, run_dir: Path, status: Status) -> OpenTarget:
    """Start the embedded mesh (`opts.gateway` empty) or preflight an existing one. The caller
    closes `backend` and stops `mesh`."""
    notes: list[str] = []
    mesh: EmbeddedMesh | None = None
    if opts.gateway:
        if not opts.backend:
            raise RunError(
                "--gateway needs --backend zipkin:URL | jaeger:URL | jaeger-v3:URL | auto:URL "
                "(where traces are read back)"
            )
        kind = "external"
        gateway, host, collector = opts.gateway, opts.host, opts.collector
        try:
            backend = parse_backend_spec(
                opts.backend, BackendOptions.from_env(os.environ).merged(opts.backend_flags)
            )
        except ValueError as exc:
            raise RunError(str(exc)) from exc
        try:
            notes += preflight(gateway, host, collector or None, backend)
        except RunError:
            backend.close()
            raise
        backend_spec = opts.backend
        # When the profile has no time to queryable: Envoy's default Zipkin flush timer is
        # 5 s, so wait that long without news, plus 1 s.
        fallback_quiet_s = 6.0
        hops = None
        configured = opts.expect_percent
    else:
        kind = "embedded"
        status("starting the embedded mesh (collector, echo, sidecar Envoy, gateway Envoy)")
        mesh = EmbeddedMesh(
            run_dir,
            MeshConfig(tracing=opts.tracing, faults=opts.faults, upstream=opts.upstream, fanout=opts.fanout),
        )
        try:
            mesh.start()
        except (StackError, KeyboardInterrupt) as exc:
            mesh.stop()
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise RunError(f"the embedded mesh did not start: {exc}") from exc
        gateway, host, collector = mesh.gateway_url, mesh.host_header, mesh.collector_url
        backend_spec = f"zipkin:{collector}"
        backend = parse_backend_spec(backend_spec)
        tracing = mesh.config.tracing
        fallback_quiet_s = tracing.flush_interval_ms / 1000.0 + 1.0
        # The hops a request should cross (propagation integrity). What a complete trace
        # holds is not taken from the knobs: the probe learns it, as on any mesh.
        hops = mesh.config.hops(opts.path)
        configured = tracing.sampling_percent if opts.expect_percent is None else opts.expect_percent
        status(f"gateway {gateway} (Host {host}), collector {collector}")
    return OpenTarget(
        kind, gateway, host, collector, backend, backend_spec, fallback_quiet_s,
        tuple(hops) if hops else None, configured, mesh, notes,
    )  # fmt: skip


def probe_only(opts: RunOptions, status: Status) -> tuple[MeshProfile, Path]:
    """`loadgen probe`: open the target, learn its profile, write <output>/<run-id>/mesh-profile.json."""
    run_id = opts.resolved_run_id()
    check_run_id(run_id)
    check_path(opts.path)
    out_dir = opts.output_dir / run_id
    if out_dir.exists() and any(out_dir.iterdir()):
        raise RunError(f"folder {out_dir} already exists and is not empty; choose another --run-id")
    fresh = new_dirs(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        opened = open_target(opts, out_dir, status)
    except BaseException:
        discard_empty(fresh)  # a failed preflight leaves no empty folder behind
        raise
    try:
        profile = learn_profile(replace(opts, probe=True, profile_path=None), opened.gateway, opened.host,
                                opened.backend, run_id, status)  # fmt: skip
        profile = profile.with_notes(*opened.notes)
        write_json(out_dir / PROFILE_FILE, profile.to_dict())
    finally:
        opened.backend.close()
        if opened.mesh is not None:
            status("stopping the embedded mesh")
            opened.mesh.stop()
        discard_empty(fresh)
    return profile, out_dir / PROFILE_FILE


def execute_run(opts: RunOptions, status: Status) -> RunResult:
    """Run everything; KeyboardInterrupt during load or read-back yields a partial report."""
    run_id = opts.resolved_run_id()
    check_run_id(run_id)
    check_path(opts.path)
    parse_mix(opts.mix)  # fail before anything starts
    run_dir = opts.output_dir / run_id
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunError(f"run folder {run_dir} already exists and is not empty; choose another --run-id")
    fresh = new_dirs(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = run_dir / "ledger.jsonl"
    reference_path = run_dir / "reference.jsonl"
    notes: list[str] = []
    partial_reason = ""
    failure: ComponentFailure | None = None
    mesh: EmbeddedMesh | None = None
    backend: TraceBackend | None = None
    started_at = time.time()
    try:
        opened = open_target(opts, run_dir, status)
        mesh, backend = opened.mesh, opened.backend
        kind, gateway, host, collector = opened.kind, opened.gateway, opened.host, opened.collector
        backend_spec, fallback_quiet_s, hops, configured = (
            opened.backend_spec,
            opened.fallback_quiet_s,
            opened.hops,
            opened.configured,
        )
        notes += opened.notes
        target = {
            "kind": kind,
            "gateway": redact_url(gateway),  # stored and shown: never the credentials
            "host": host,
            "collector": redact_url(collector),
            "backend": backend.url,
            "backend_spec": redact_url(backend_spec),
            "reader": backend.name,  # what `auto:` chose
        }
        # Learn the mesh before measuring it: the profile, not the knobs or a default, sets the
        # expectations (shape of a complete trace, header-mode context, run-id tag, quiet period).
        profile = learn_profile(opts, gateway, host, backend, run_id, status)
        write_json(run_dir / PROFILE_FILE, profile.to_dict())
        status(f"mesh profile: {profile_line(profile)}")
        shape, shape_notes = resolved_shape(profile, opts.expected_spans)
        # An existing mesh's gateway flags are the user's declaration, the fallback for what the
        # probe cannot learn; the embedded mesh's knobs only build it, so its fallback is Istio's
        # ingress gateway, as for a mesh nobody declared anything about.
        declared = opts.tracing.expectation_context() if kind == "external" else ExpectationContext()
        context = expectation_context(profile, configured, base=declared)
        if kind == "external":
            shape_notes += declaration_warnings(declared, context)
        notes += [*profile.notes, *shape_notes]
        learned_quiet_s = suggested_quiet_s(profile)
        if opts.quiet_s is not None:
            quiet_s = opts.quiet_s
        else:
            quiet_s = learned_quiet_s if learned_quiet_s is not None else fallback_quiet_s
        run_id_tag = profile.run_id_tag if profile.source != "flags" else opts.tracing.run_id_tag
        gaps = expectation_gaps(replace(profile, shape=shape))  # a declared --expected-spans fills the shape
        if not run_id_tag:
            notes.append(
                "no span carries the run id (the probe found no run-id tag): the run-tag search is "
                "skipped and its estimates are null; " + RUN_ID_TAG_ADVICE
            )
        expect = Expectation(
            shape.total if shape else 0,
            tuple(svc for svc in (shape.services if shape else ()) if svc != "*"),
            configured,
            context=context,
            shape=shape,
        )
        write_json(
            run_dir / "run.json",
            {
                "run_id": run_id,
                "version": __version__,
                "options": _options_dict(opts),
                "target": target,
                # Everything `loadgen verify` needs to re-reconcile later.
                "expectation": {
                    "spans_per_trace": expect.spans_per_trace,
                    "services": list(expect.services),
                    "configured_percent": expect.configured_percent,
                    "run_id_tag": run_id_tag or "",
                    "shape": shape.to_json() if shape else None,
                    "gaps": gaps,
                    "quiet_s": quiet_s,
                    "min_collection": opts.min_collection,
                    "max_error_rate": opts.max_error_rate,
                    "search_service": opts.search_service,
                    "context": asdict(context),
                    "hops": [[h.service, h.spans] for h in hops] if hops else None,
                },
            },
        )

        emitter = None
        if collector and opts.reference_rate > 0:
            emitter = ReferenceEmitter(
                collector,
                run_id,
                reference_path,
                rate_per_s=opts.reference_rate,
                children=opts.reference_children,
            )
        env = {
            # Not `--host`: a gateway URL's credentials would show in every `ps` listing.
            "LOCUST_HOST": gateway,
            "LOADGEN_RUN_ID": run_id,
            "LOADGEN_LEDGER": str(ledger_path),
            "LOADGEN_HOST_HEADER": host,
            "LOADGEN_MIX": opts.mix,
            "LOADGEN_RATE": str(opts.rate),
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
        env.update(opts.extra_env)
        status(
            f"load: {opts.users} users for {opts.duration_s:g} s"
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
        tail = LedgerTail(ledger_path, upstream_decision)
        if emitter is not None:
            emitter.start()
        try:
            while locust.poll() is None:
                time.sleep(1.0)
                if mesh is not None:
                    mesh.check_alive()
                disk = disk_problem(run_dir)
                if disk:
                    raise _Failed(ComponentFailure("disk", disk))
                live = tail.poll()
                ref = emitter.counters() if emitter else None
                status(_live_line(time.time() - started_at, live, ref))
                if opts.on_tick is not None:
                    reason = opts.on_tick(live, time.time() - started_at)
                    if reason:
                        raise _Abort(reason)
        except (KeyboardInterrupt, StackError, _Abort, _Failed) as exc:
            if isinstance(exc, _Abort):
                partial_reason = f"aborted: {exc}"
            elif isinstance(exc, KeyboardInterrupt):
                partial_reason = "interrupted"
            else:
                failure = _mesh_failure(exc) if isinstance(exc, StackError) else exc.failure
                partial_reason = failure.headline()
            status(f"stopping load ({partial_reason}); flushing the ledger")
            if locust.poll() is None:
                locust.send_signal(signal.SIGTERM)
        finally:
            try:
                locust.wait(timeout=30)
            except subprocess.TimeoutExpired:
                locust.kill()
                locust.wait()
                notes.append(
                    "Locust did not stop within 30 s and was killed; the last ledger lines may be missing"
                )
            locust_log.close()
            if emitter is not None:
                counters = emitter.stop()
                status(f"reference emitter stopped: {counters.traces_started} traces started")
        if locust.returncode not in (0, None) and not partial_reason:
            failure = locust_failure(locust.returncode, run_dir / "locust.log")
            partial_reason = failure.headline()
        elif failure is None and mentions_disk_full(log_tail(run_dir / "locust.log")):
            failure = ComponentFailure(
                "disk", "no space left on device while Locust wrote the ledger", str(run_dir / "locust.log"),
                log_tail(run_dir / "locust.log"),
            )  # fmt: skip
            partial_reason = failure.headline()

        # --- read-back, reconcile -------------------------------------------------------------
        load_end = time.time()
        outcome = read_back_run(
            run_dir, run_id, backend, expect,
            quiet_s=0.0 if partial_reason else quiet_s, poll_interval_s=opts.poll_interval_s,
            max_wait_s=opts.max_wait_s, run_id_tag=run_id_tag or "", load_end=load_end, status=status,
            search_service=opts.search_service, hops=hops,
        )  # fmt: skip
        if outcome.interrupted:
            partial_reason = partial_reason or "interrupted during read-back"
        if not outcome.requests_total:
            notes.append(no_requests_note(run_dir / "locust.log", opts.duration_s))
        facts = {
            "status": "partial" if partial_reason else "complete",
            **({"status_reason": partial_reason} if partial_reason else {}),
            **({"component_failure": failure.to_dict()} if failure is not None else {}),
            "target": target,
            "profile": profile.to_dict(),
            "started_at": started_at,
            "locust": locust_totals(run_dir),
        }
        summary = build_summary(
            run_id=run_id, measured=outcome.measured, min_collection=opts.min_collection,
            max_error_rate=opts.max_error_rate, gaps=gaps, notes=[*notes, *outcome.notes],
            readback_notes=outcome.notes, facts=msgspec.convert(facts, RunFacts),
        )  # fmt: skip
        write_report_files(run_dir, summary)
        if failure is not None:
            code = EXIT_COMPONENT_FAILED
        elif partial_reason.startswith("aborted"):
            code = EXIT_VERDICT_FAILED
        else:
            code = exit_code_for(summary.verdicts, partial=bool(partial_reason))
        return RunResult(summary.to_dict(), run_dir, code)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise RunError(
            f"no space left on device writing {exc.filename or run_dir}; what was written is intact: "
            f"free some space, then `loadgen verify {run_dir}` reads the traces back and reports"
        ) from exc
    finally:
        if backend is not None:
            backend.close()
        if mesh is not None:
            status("stopping the embedded mesh")
            mesh.stop()
        discard_empty(fresh)  # a run that wrote nothing (a failed preflight) leaves no empty folder


@dataclass
class ReadBackOutcome:
    """What `read_back_run` measured: the summary's sections, the read-back's notes, and whether
    a Ctrl-C cut it short."""

    measured: Measured
    notes: list[str]
    interrupted: bool
    requests_total: int


def read_back_run(
    run_dir: Path,
    run_id: str,
    backend: TraceBackend,
    expect: Expectation,
    *,
    quiet_s: float,
    poll_interval_s: float,
    max_wait_s: float,
    run_id_tag: str,
    load_end: float,
    status: Status,
    search_service: str | None = None,
    hops: Sequence[Hop] | None = None,
) -> ReadBackOutcome:
    """Query every ledger and reference trace id, reconcile, and write fetched.jsonl.

    Shared by `loadgen run` and `loadgen verify`, which build the summary from it
    (`loadgen.summary.build`). A Ctrl-C during polling keeps what was learned and leaves the rest
    unknown."""
    notes: list[str] = []
    ledger_path = run_dir / "ledger.jsonl"
    reference_path = run_dir / "reference.jsonl"
    ledger_stats = LedgerStats()
    expected: dict[str, int] = {}
    expected_services: dict[str, tuple[str, ...]] = {}
    last_end = 0.0  # when the last request ended: time zero of the time-to-queryable curve
    for rec in read_ledger(ledger_path, ledger_stats):
        tid = ledger_trace_id(rec)
        if tid:
            # Query every id: sampled ones must be complete, the others are checked for leaks.
            sampled = upstream_decision(rec)
            expected[tid] = expect.spans_per_trace if sampled else 0
            if sampled:
                expected_services[tid] = expect.services
            last_end = max(
                last_end, float(rec.get("ts") or 0.0) + float(rec.get("latency_ms") or 0.0) / 1000.0
            )
    if ledger_stats.truncated:
        notes.append(
            f"{ledger_stats.truncated} ledger line(s) were truncated (a crash mid-write) or not a UTF-8 JSON record, and skipped"
        )
    ref_summary = (
        summarize_reference_log(read_reference_log(reference_path)) if reference_path.exists() else None
    )
    if ref_summary is not None:
        for tid, outcome in ref_summary.traces.items():
            if outcome.state in ("exported", "failed"):
                key = normalize_trace_id(tid)
                expected[key] = outcome.spans if outcome.state == "exported" else 0
    readback = _poll_backend(
        backend, expected, expected_services, notes,
        quiet_s=quiet_s, poll_interval_s=poll_interval_s, max_wait_s=max_wait_s,
        run_id_tag=run_id_tag, run_id=run_id, status=status,
    )  # fmt: skip
    write_fetched(run_dir / "fetched.jsonl", readback.observations, readback.complete_at)
    reconciled = reconcile_mesh(read_ledger(ledger_path), readback.observations, expect)
    reference = _reference_section(ref_summary, readback.observations)
    refs = ((t, o.state, o.spans, o.t) for t, o in ref_summary.traces.items()) if ref_summary else ()
    windows = windows_summary(read_ledger(ledger_path), readback.observations, expect, refs)
    first_ts = reconciled["requests"]["first_ts"]
    window = (int((first_ts - 2.0) * 1e6), int((max(last_end, load_end) + 2.0) * 1e6)) if first_ts else None
    tag_search = None
    if window and run_id_tag and not readback.interrupted:
        status(f"searching the backend for spans tagged {run_id_tag}={run_id}")
        try:
            tagged = search_run(
                backend,
                tag=run_id_tag,
                run_id=run_id,
                service=search_service,
                start_us=window[0],
                end_us=window[1],
            )
        except (BackendError, ValueError) as exc:
            notes.append(f"run-tag search failed: {exc}")
        else:
            ref_ids = {normalize_trace_id(t) for t in ref_summary.traces} if ref_summary else set()
            tag_search = estimate_from_tags(
                read_ledger(ledger_path), tagged, ref_ids, reference["collection"], expect.context
            )
    hop_traces = _search_fragments(backend, hops, window, notes, status) if not readback.interrupted else None
    integrity = fold_integrity(
        read_ledger(ledger_path),
        readback.observations,
        hops,
        hop_traces=hop_traces,
        run_id_tag=run_id_tag,
        run_id=run_id,
    )
    measured = Measured(
        reconciled=reconciled,
        reference=reference,
        windows=windows,
        readback={
            "quiet_s": quiet_s,
            "poll_interval_s": poll_interval_s,
            "stable": readback.stable,
            "polls": [asdict(p) for p in readback.polls],
        },
        queryable=time_to_queryable(readback.polls, last_end or load_end, poll_interval_s),
        tag_search=tag_search,
        integrity=integrity,
    )
    return ReadBackOutcome(measured, notes, readback.interrupted, int(reconciled["requests"]["total"]))


def _poll_backend(
    backend: TraceBackend,
    expected: dict[str, int],
    expected_services: dict[str, tuple[str, ...]],
    notes: list[str],
    *,
    quiet_s: float,
    poll_interval_s: float,
    max_wait_s: float,
    run_id_tag: str,
    run_id: str,
    status: Status,
) -> ReadBackResult:
    """Poll the backend for every expected trace until the counts are quiet (readback.read_back);
    a note says why it stopped unstable."""
    readback = ReadBackResult()
    try:
        read_back(
            backend, expected,
            quiet_s=quiet_s, poll_interval_s=poll_interval_s, max_wait_s=max_wait_s,
            run_id_tag=run_id_tag, run_id=run_id, on_status=status, result=readback,
            expected_services=expected_services,
        )  # fmt: skip
    except KeyboardInterrupt:
        readback.interrupted = True
        notes.append("read-back was interrupted: traces not queried are reported unknown")
    if not readback.stable and not readback.interrupted:
        first_error = next((o.error for o in readback.observations.values() if o.error), None)
        if readback.polls and all(p.queried and p.errors >= p.queried for p in readback.polls):
            notes.append(
                f"every poll of the backend failed ({first_error or 'no error message'}); traces are unknown"
            )
        elif readback.polls and readback.polls[-1].errors:
            notes.append(
                f"the backend still failed {readback.polls[-1].errors} queries on the last poll after "
                f"{max_wait_s:g} s ({first_error or 'no error message'}); those traces are unknown"
            )
        else:
            notes.append(f"trace counts were still changing after {max_wait_s:g} s of polling (--max-wait)")
    return readback


def _reference_section(ref_summary: Any, observations: dict[str, TraceObservation]) -> dict[str, Any]:
    """The reference traces reconciled, with the emitter's own counters."""
    if ref_summary is None:
        return reconcile_reference([], observations, {})
    counters = {
        "spans_started": ref_summary.spans_started,
        "spans_exported": ref_summary.spans_exported,
        "spans_failed": ref_summary.spans_failed,
        "spans_dropped": ref_summary.spans_dropped,
        "export_calls": ref_summary.export_calls,
        "export_failures": ref_summary.export_failures,
    }
    return reconcile_reference(ref_summary.iter_traces(), observations, counters)


def _search_fragments(
    backend: TraceBackend,
    hops: Sequence[Hop] | None,
    window: tuple[int, int] | None,
    notes: list[str],
    status: Status,
) -> Any:
    """The downstream hop's traces in the run's time window (fragmented traces), or None."""
    service = downstream_service(hops) if hops else None
    if not service or window is None:
        return None
    status(f"searching the backend for {service} spans (fragmented traces)")
    try:
        return search_hop_traces(backend, service=service, start_us=window[0], end_us=window[1])
    except (BackendError, ValueError) as exc:
        notes.append(f"fragment search failed: {exc}")
        return None


def read_back_and_reconcile(
    run_dir: Path,
    run_id: str,
    backend: TraceBackend,
    expect: Expectation,
    *,
    min_collection: float,
    gaps: Mapping[str, str] | None = None,
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE,
    **read_back_options: Any,
) -> tuple[dict[str, Any], bool]:
    """`read_back_run` and the summary of what it measured, as JSON data (no run facts: status,
    target, ... are the caller's); returns (summary, interrupted)."""
    outcome = read_back_run(run_dir, run_id, backend, expect, **read_back_options)
    summary = build_summary(
        run_id=run_id, measured=outcome.measured, min_collection=min_collection,
        max_error_rate=max_error_rate, gaps=gaps, notes=outcome.notes,
    )  # fmt: skip
    return summary.to_dict(), outcome.interrupted


_LOCUST_ERROR = re.compile(r"/ERROR/[^:]*: (.+)$")


def no_requests_note(locust_log: Path, duration_s: float) -> str:
    """Why a run made no request, for its notes: the last error Locust logged (a user whose task
    raises before sending logs a traceback per attempt and writes no ledger record)."""
    from loadgen.redact import redact_text

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


def _options_dict(opts: RunOptions) -> dict[str, Any]:
    d = asdict(opts)
    d["output_dir"] = str(opts.output_dir)
    # run.json is shared with reports: no credentials from URLs or backend flags.
    for key in ("backend", "collector", "gateway"):
        d[key] = redact_url(str(d[key]))
    flags = dict(d.get("backend_flags") or {})
    if flags.get("headers"):
        flags["headers"] = {name: "<redacted>" for name in flags["headers"]}
    for secret in ("bearer_token", "basic_auth"):
        if flags.get(secret) is not None:
            flags[secret] = "<redacted>"
    d["backend_flags"] = flags
    d["on_tick"] = None if opts.on_tick is None else getattr(opts.on_tick, "__qualname__", "hook")
    return d


__all__ = [
    "RUN_ID_HEADER",
    "RunError",
    "RunOptions",
    "RunResult",
    "execute_run",
    "preflight",
    "probe_only",
    "verify_run",
]


#: What `loadgen verify` reports as changed: (measure, its value in a summary).
VERIFY_MEASURES: tuple[tuple[str, Callable[[Summary], int | None]], ...] = (
    ("mesh collection", lambda s: s.mesh.collection.k if s.mesh else None),
    ("mesh unknown", lambda s: s.mesh.unknown if s.mesh else None),
    ("mesh leaked", lambda s: s.mesh.leaked if s.mesh else None),
    ("reference collection", lambda s: s.reference.collection.k if s.reference else None),
    ("reference unknown", lambda s: s.reference.unknown if s.reference else None),
)


def write_report_files(run_dir: Path, summary: Summary) -> None:
    """summary.json, report.md, and (report.html) report.html, modes.csv and timeseries.csv."""
    write_json(run_dir / "summary.json", summary.to_dict())
    (run_dir / "report.md").write_text(render_markdown(summary))
    render_run_folder(run_dir)


def _verify_collector(run_dir: Path) -> tuple[ManagedProcess, str]:
    """A collector on an embedded run's span store (its own is gone): the process and its backend spec."""
    collector = ManagedProcess(
        "collector",
        python_module_argv(
            "loadgen.stack.collector", "--port", "0", "--data-dir", str(run_dir / "collector")
        ),
        run_dir / "stack" / "verify-collector.log",
    )
    collector.start(stdout_pipe=True)
    return collector, "zipkin:" + str(collector.read_ready_line(15.0)["url"])


def _verify_facts(
    run_dir: Path, checked: RunMeta, previous: Summary | None, backend: TraceBackend, backend_spec: str
) -> tuple[RunFacts, list[str], list[str]]:
    """What a verified summary keeps of the run: its facts (from the previous summary, or rebuilt
    from the folder: partial, `recovered` naming what only the live run knew), its notes without
    the previous read-back's, and those stale read-back notes."""
    if previous is not None:
        facts, notes, stale = RunFacts.of(previous), previous.notes, previous.readback_notes
    else:  # the run was killed, crashed or ran out of disk: rebuild it, marked partial
        rebuilt = rebuilt_fields(run_dir, checked)
        fields = {k: v for k, v in rebuilt.items() if k in KEPT_BY_VERIFY}
        facts, notes, stale = msgspec.convert(fields, RunFacts), rebuilt["notes"], rebuilt["readback_notes"]
    if backend_spec:
        # Verified elsewhere: say where, so the summary does not name the old backend.
        target = msgspec.structs.replace(
            facts.target or Target(),
            backend=backend.url,
            backend_spec=redact_url(backend_spec),
            reader=backend.name,
        )
        facts = msgspec.structs.replace(facts, target=target)
    return facts, list(notes), list(stale)


def verify_run(
    run_dir: Path,
    status: Status,
    *,
    backend_spec: str = "",
    max_wait_s: float = 30.0,
    poll_interval_s: float = 1.0,
) -> tuple[RunResult, list[tuple[str, Any, Any]]]:
    """`loadgen verify RUN`: query the backend again for every trace of an earlier run (late spans,
    a backend that was down), re-reconcile, and rewrite summary.json/report.md. The summary it
    replaces is kept (runfolder.keep_previous: summary.previous.json is the run's own, never
    overwritten). A run that never wrote summary.json gets one rebuilt from its folder
    (runfolder.rebuilt_fields). Returns the result and (measure, before, after), no changes for
    a rebuild. RunFolderError when run.json or summary.json is unusable.

    An embedded run's collector is gone, but its span store is in the run folder: a collector is
    started on it for the duration of the check."""
    checked = read_run_json(run_dir)
    previous = read_previous_summary(run_dir)
    collector: ManagedProcess | None = None
    try:
        if backend_spec:
            spec = backend_spec
        elif checked.kind == "embedded":
            collector, spec = _verify_collector(run_dir)
        else:
            spec = checked.backend_spec
        try:
            backend = parse_backend_spec(spec)
            backend.check()
        except (ValueError, BackendError) as exc:
            raise RunError(
                f"cannot verify against backend {redact_url(spec)!r}: {redact_text(str(exc))}"
            ) from exc
        expect = Expectation.from_run_json(checked.doc.get("expectation") or {})
        try:
            outcome = read_back_run(
                run_dir, checked.run_id, backend, expect,
                quiet_s=0.0, poll_interval_s=poll_interval_s, max_wait_s=max_wait_s,
                run_id_tag=checked.run_id_tag, load_end=time.time(), status=status,
                search_service=checked.search_service, hops=checked.hops,
            )  # fmt: skip
        finally:
            backend.close()
    finally:
        if collector is not None:
            collector.stop()
    facts, kept_notes, stale = _verify_facts(run_dir, checked, previous, backend, backend_spec)
    if outcome.interrupted:
        facts = msgspec.structs.replace(
            facts, status="partial", status_reason="verify interrupted during read-back"
        )
    measured = outcome.measured
    if not isinstance(facts.recovered, msgspec.UnsetType):
        measured = replace(measured, queryable=None)  # timed from the end of the load: unknown here
    # The load's notes stay; the previous read-back's are replaced by this one's (not duplicated).
    notes = list(dict.fromkeys([*(n for n in kept_notes if n not in set(stale)), *outcome.notes]))
    summary = build_summary(
        run_id=checked.run_id, measured=measured, min_collection=checked.min_collection,
        max_error_rate=DEFAULT_MAX_ERROR_RATE if checked.max_error_rate is None else checked.max_error_rate,
        gaps=checked.gaps, notes=notes, readback_notes=outcome.notes,
        facts=msgspec.structs.replace(facts, verified_at=time.time()),
    )  # fmt: skip
    if previous is not None:
        keep_previous(run_dir)
    write_report_files(run_dir, summary)
    changes = [(name, get(previous), get(summary)) for name, get in VERIFY_MEASURES] if previous else []
    # The verdicts decide, on what this read-back saw: a run that ended partial (a crash, a
    # Ctrl-C) is not an interrupt of this verify; only a Ctrl-C here is 130.
    code = exit_code_for(summary.verdicts, partial=outcome.interrupted)
    return RunResult(summary.to_dict(), run_dir, code), changes
