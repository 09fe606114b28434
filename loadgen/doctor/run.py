"""`run_doctor`: every check the inputs allow, in an order that lets Envoy flush meanwhile.

Nothing raises out of here: each check turns its own errors into a failed `Check` with a hint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loadgen.backends import TraceBackend, parse_backend_spec
from loadgen.doctor.bootstrap import V2_ENDPOINT, collector_endpoints, lint_bootstrap, load_json
from loadgen.doctor.collector import check_backend, check_collector
from loadgen.doctor.gateway import check_gateway, check_mesh_trace
from loadgen.doctor.headers import check_header_mix, check_mesh_tracer, tracer_facts
from loadgen.doctor.istio import check_istio_tracing
from loadgen.doctor.model import Check, CheckStatus, DoctorReport, skipped
from loadgen.mesh.istio_config import (
    IstioConfigError,
    WorkloadMode,
    effective_sampling,
    load_istio_files,
)
from loadgen.mesh.modes import DEFAULT_MIX, HeaderMode
from loadgen.mesh.tracer import TracerFamily

__all__ = ["DEFAULT_WORKLOAD_LABELS", "DEFAULT_WORKLOAD_NAMESPACE", "check_istio_sampling", "run_doctor"]

# The ingress gateway decides sampling for requests that arrive without a decision.
DEFAULT_WORKLOAD_NAMESPACE = "istio-system"
DEFAULT_WORKLOAD_LABELS: Mapping[str, str] = {"istio": "ingressgateway"}


def _guarded(name: str, run: Callable[[], list[Check]]) -> list[Check]:
    try:
        return run()
    except Exception as exc:  # a doctor reports, it never crashes
        return [
            Check(
                name,
                CheckStatus.FAIL,
                f"the check itself failed: {type(exc).__name__}: {exc}",
                "report this as a loadgen bug, with the command line",
            )
        ]


def check_istio_sampling(
    istio_files: Sequence[str | Path],
    namespace: str,
    labels: Mapping[str, str],
    mode: WorkloadMode,
) -> Check:
    """`istio.sampling`: the effective sampling for one workload, with the chain that decided it."""
    who = ",".join(f"{k}={v}" for k, v in labels.items()) or "(any labels)"
    try:
        resources = load_istio_files(istio_files)
    except (IstioConfigError, OSError) as exc:
        return Check(
            "istio.sampling", CheckStatus.FAIL, f"cannot read the Istio configuration: {exc}", "fix the file"
        )
    try:
        result = effective_sampling(resources, namespace, labels, mode)
    except IstioConfigError as exc:
        return Check("istio.sampling", CheckStatus.FAIL, str(exc), "fix the value in that resource")
    relevant = {"Telemetry", "IstioOperator", "ConfigMap", "Pod", "Deployment", "StatefulSet", "DaemonSet"}
    warnings = list(result.warnings)
    if not any(r.kind in relevant for r in resources):
        warnings.append("the files hold no Telemetry, IstioOperator, istio ConfigMap or workload")
    return Check(
        "istio.sampling",
        CheckStatus.WARN if warnings else CheckStatus.PASS,
        f"{result.percent:g} % for {who} in {namespace} ({mode.value.lower()} side), from {result.source}",
        "; ".join(warnings) if warnings else "",
        tuple(c.line() for c in result.considered),
        {
            "percent": result.percent,
            "source": result.source,
            "namespace": namespace,
            "labels": dict(labels),
            "mode": mode.value,
        },
    )


def run_doctor(
    gateway: str | None = None,
    host: str | None = None,
    collector: str | None = None,
    backend: TraceBackend | str | None = None,
    bootstrap: Any = None,
    istio_files: Sequence[str | Path] = (),
    *,
    namespace: str = DEFAULT_WORKLOAD_NAMESPACE,
    workload_labels: Mapping[str, str] | None = None,
    workload_mode: WorkloadMode = WorkloadMode.CLIENT,
    path: str = "/headers",
    tracer: TracerFamily | None = None,
    mix: Mapping[HeaderMode, float] | None = None,
    readback_timeout_s: float = 10.0,
    trace_timeout_s: float = 15.0,
    settle_s: float = 6.0,
    client: httpx.Client | None = None,
) -> DoctorReport:
    """Run every check the inputs allow and return the report.

    `backend` is a reader or a `KIND:URL` spec (built and closed here). `bootstrap` is the parsed
    JSON of `istioctl proxy-config bootstrap POD -o json` (or a listener dump, or just its
    `tracing`), or a path to it (`-` = stdin). When the collector URL has no path, the probe posts
    to the bootstrap's collectorEndpoint if it names exactly one, else to /api/v2/spans.
    `istio_files` are YAML files (`-` = stdin) for `istio.sampling`, evaluated for the workload
    with `workload_labels` in `namespace` (default: the ingress gateway, CLIENT side); they also
    give `istio.provider` (zipkin or opentelemetry), its fields and `istio.custom_tags`. `tracer`
    (--tracer) and what the gateway, bootstrap and YAML show give `mesh.tracer`; `mix` (default
    DEFAULT_MIX) is checked against it in `mesh.header_mix`. `settle_s`:
    how long `mesh.trace` waits for no new span once the trace appeared (Envoy flushes every 5 s
    in Istio).
    """
    checks: list[Check] = []
    labels = DEFAULT_WORKLOAD_LABELS if workload_labels is None else workload_labels

    # 1. Pure checks first: they cost nothing and explain what the probes will find.
    bootstrap_obj = _bootstrap_checks(bootstrap, checks)
    checks.extend(_istio_checks(istio_files, namespace, labels, workload_mode))

    # 2. The backend, so that read-backs below can be trusted (or explained).
    reader, own_reader = _open_reader(backend, checks)
    try:
        backend_ok = _backend_checks(reader, backend, checks)

        # 3. The gateway; its forced-sampled request is then flushed by Envoy while we probe.
        forced_trace_id = _gateway_checks(gateway, host, client, path, checks)
        checks.extend(_guarded("mesh.tracer", lambda: _tracer_checks(checks, tracer, mix)))

        # 4. The collector endpoint, at the path the proxies use when the bootstrap says so.
        if collector:
            readback = _CollectorReadback(reader, backend_ok, readback_timeout_s)
            checks.extend(_collector_checks(collector, bootstrap_obj, readback, client))
        else:
            checks.append(skipped("collector", "no --collector given"))

        # 5. End to end: the gateway's own spans in the backend.
        if forced_trace_id and reader is not None and backend_ok:
            trace_id = forced_trace_id
            checks.extend(
                _guarded(
                    "mesh.trace",
                    lambda: [
                        check_mesh_trace(reader, trace_id, timeout_s=trace_timeout_s, settle_s=settle_s)
                    ],
                )
            )
        elif gateway:
            reason = (
                "no working --backend"
                if not backend_ok
                else "the gateway's forced request (B3 or traceparent) gave no trace to look for"
            )
            checks.append(skipped("mesh.trace", reason))
    finally:
        if own_reader and reader is not None:
            reader.close()
    return DoctorReport(checks)


def _istio_checks(
    istio_files: Sequence[str | Path], namespace: str, labels: Mapping[str, str], mode: WorkloadMode
) -> list[Check]:
    """`istio.sampling`, then `istio.provider` and its field and custom-tag checks."""
    if not istio_files:
        return [skipped("istio.sampling", "no --istio-config given")]
    return [
        *_guarded("istio.sampling", lambda: [check_istio_sampling(istio_files, namespace, labels, mode)]),
        *_guarded("istio.provider", lambda: check_istio_tracing(istio_files, namespace, labels, mode)),
    ]


def _gateway_checks(
    gateway: str | None, host: str | None, client: httpx.Client | None, path: str, checks: list[Check]
) -> str | None:
    """The gateway checks (appended to `checks`); returns the trace id of its forced-sampled request."""
    if not gateway:
        checks.append(skipped("gateway", "no --gateway given"))
        return None
    gateway_checks = _guarded("gateway", lambda: check_gateway(gateway, host, client, path=path))
    checks.extend(gateway_checks)
    forced = next((c for c in gateway_checks if c.data.get("forced_trace_id")), None)  # b3 or traceparent
    return forced.data["forced_trace_id"] if forced is not None else None


def _tracer_checks(
    checks: list[Check], tracer: TracerFamily | None, mix: Mapping[HeaderMode, float] | None
) -> list[Check]:
    """`mesh.tracer` from every source so far, then `mesh.header_mix` against it."""
    tracer_check = check_mesh_tracer(tracer_facts(checks, tracer))
    return [tracer_check, check_header_mix(DEFAULT_MIX if mix is None else mix, tracer_check)]


def _bootstrap_checks(bootstrap: Any, checks: list[Check]) -> Any:
    """Lint the bootstrap dump (appended to `checks`); returns its parsed JSON (None: none read)."""
    if bootstrap is None:
        checks.append(skipped("bootstrap", "no --bootstrap given"))
        return None
    bootstrap_obj: Any = None

    def lint() -> list[Check]:
        nonlocal bootstrap_obj
        try:
            bootstrap_obj = load_json(bootstrap) if isinstance(bootstrap, str | Path) else bootstrap
        except (OSError, ValueError) as exc:
            return [
                Check(
                    "bootstrap",
                    CheckStatus.FAIL,
                    f"cannot read the bootstrap dump: {exc}",
                    "pass the JSON of `istioctl proxy-config bootstrap POD -o json` (or - for stdin)",
                )
            ]
        return lint_bootstrap(bootstrap_obj)

    checks.extend(_guarded("bootstrap", lint))
    return bootstrap_obj


def _open_reader(backend: TraceBackend | str | None, checks: list[Check]) -> tuple[TraceBackend | None, bool]:
    """(reader, whether this module built it and must close it); a bad spec is a failed check."""
    if not isinstance(backend, str):
        return backend, False
    try:
        return parse_backend_spec(backend), True
    except ValueError as exc:
        checks.append(
            Check("backend.query", CheckStatus.FAIL, str(exc), "pass --backend zipkin:http://HOST:9411")
        )
        return None, False


def _backend_checks(
    reader: TraceBackend | None, backend: TraceBackend | str | None, checks: list[Check]
) -> bool:
    """`backend.query` (appended to `checks`); True when the backend answers."""
    if reader is not None:
        backend_check = _guarded("backend.query", lambda: [check_backend(reader)])
        checks.extend(backend_check)
        return backend_check[0].status is CheckStatus.PASS
    if backend is None:
        checks.append(skipped("backend.query", "no --backend given"))
    return False


@dataclass(frozen=True)
class _CollectorReadback:
    reader: TraceBackend | None
    backend_ok: bool
    timeout_s: float


def _collector_checks(
    collector: str, bootstrap_obj: Any, readback: _CollectorReadback, client: httpx.Client | None
) -> list[Check]:
    """The collector probe, read back through the backend only when that answers."""
    endpoints = collector_endpoints(bootstrap_obj) if bootstrap_obj is not None else []
    default_path = endpoints[0] if len(endpoints) == 1 else V2_ENDPOINT
    collector_checks = _guarded(
        "collector.endpoint",
        lambda: check_collector(
            collector,
            readback.reader if readback.backend_ok else None,
            client=client,
            default_path=default_path,
            readback_timeout_s=readback.timeout_s,
        ),
    )
    if readback.reader is not None and not readback.backend_ok:
        collector_checks = [
            skipped(c.name, "the backend does not answer (see backend.query)")
            if c.name == "collector.readback" and c.summary.startswith("no --backend")
            else c
            for c in collector_checks
        ]
    return collector_checks
