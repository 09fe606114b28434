"""The mesh a run measures: the embedded one started, or an existing one preflighted, and
its profile learned (`loadgen probe` is this step alone)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from loadgen.backends.base import BackendError, BackendOptions, TraceBackend, redact_url
from loadgen.backends.factory import parse_backend_spec
from loadgen.emitter import check_reference_target, reference_target
from loadgen.mesh.hops import Hop
from loadgen.mesh.profile import (
    PROFILE_FILE,
    MeshProfile,
    ProfileError,
    flags_profile,
    load_profile,
    with_given_tracer,
)
from loadgen.probe import ProbeError, probe_mesh
from loadgen.redact import redact_text
from loadgen.run.options import RunError, RunOptions, Status, check_path, check_run_id
from loadgen.runfiles import write_json
from loadgen.runfolder import (
    discard_empty,
    new_dirs,
)
from loadgen.stack.mesh import (
    EmbeddedMesh,
    MeshConfig,
)
from loadgen.stack.procs import StackError


def learn_profile(
    opts: RunOptions, gateway: str, host: str, backend: TraceBackend, run_id: str, status: Status
) -> MeshProfile:
    """The mesh profile of this run: `--profile FILE`, else the probe (run id `<run-id>-probe`),
    else (`--no-probe`) only what flags declare; `--tracer` (opts.tracer), when given, overrides
    the tracer in each (`with_given_tracer`). The backend's trace route is checked with a random
    id in every case: it must answer with the backend's own "not found"."""
    if opts.profile_path is not None:
        try:
            profile = load_profile(opts.profile_path)
        except ProfileError as exc:
            raise RunError(str(exc)) from exc
        status(f"mesh profile from {opts.profile_path}")
        profile = with_given_tracer(replace(profile, tracer_given=None), opts.tracer)  # this run's --tracer
    elif opts.probe:
        try:
            probed = probe_mesh(
                gateway, host, backend, f"{run_id}-probe", path=opts.path, status=status, seed=opts.seed,
                tracer=opts.tracer,
            )  # fmt: skip
        except ProbeError as exc:
            raise RunError(f"the mesh probe failed: {exc}") from exc
        problem = backend.none_found_problem(probed.traces_sampled) if not probed.traces_found else None
        if probed.traces_sampled and problem:  # e.g. Tempo with a wrong tenant: not 100 % loss
            raise RunError(problem)
        return with_given_tracer(probed, opts.tracer)  # --tracer wins over what the probe saw
    else:
        profile = with_given_tracer(flags_profile(opts.path, opts.expected_spans), opts.tracer)
    try:
        backend.check_trace_route()
    except BackendError as exc:
        raise RunError(str(exc)) from exc
    return profile


def preflight(
    gateway: str, host: str, collector: str | None, backend: TraceBackend,
    reference_protocol: str = "zipkin", reference_grpc_endpoint: str = "",
    reference_headers: tuple[tuple[str, str], ...] = (),
) -> list[str]:  # fmt: skip
    """Check every external part before load starts; raise RunError naming the broken one. The
    collector gets an empty export in the reference protocol (Zipkin, OTLP/HTTP or OTLP/gRPC)."""
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
            reference = reference_target(
                reference_protocol, collector, reference_grpc_endpoint or None, reference_headers
            )
        except ValueError as exc:
            raise RunError(f"--collector/--reference-grpc-endpoint: {exc}") from exc
        problem = check_reference_target(reference)
        if problem:
            raise RunError(problem)
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
                "--gateway needs --backend zipkin:URL | jaeger:URL | jaeger-v3:URL | tempo:URL | auto:URL "
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
            notes += preflight(
                gateway, host, collector or None, backend, opts.reference_protocol,
                opts.reference_grpc_endpoint, opts.reference_headers,
            )  # fmt: skip
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
