"""`loadgen doctor`: is the mesh measurable? Checks before a long run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from loadgen.backends import BackendOptions, parse_backend_spec
from loadgen.cli.console import fatal, note, out, with_status
from loadgen.cli.options import DEFAULT_HOST, DEFAULT_MIX_TEXT
from loadgen.doctor import run_doctor
from loadgen.mesh.modes import parse_mix
from loadgen.mesh.profile import MeshProfile, profile_advice
from loadgen.mesh.tracer import TracerFamily
from loadgen.probe import ProbeError, probe_mesh
from loadgen.report.profile_view import profile_table

Gateway = Annotated[str, typer.Option("--gateway", help="Gateway URL, e.g. http://127.0.0.1:30000.")]
Host = Annotated[str, typer.Option("--host", help="Host header the gateway routes on.")]
Collector = Annotated[
    str,
    typer.Option(
        "--collector",
        help="Collector URL, with the span path if it is not /api/v2/spans (e.g. http://127.0.0.1:9411).",
    ),
]
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Where traces are read: zipkin:URL | jaeger:URL | jaeger-v3:URL | tempo:URL | auto:URL.",
    ),
]
Bootstrap = Annotated[
    str,
    typer.Option(
        "--bootstrap",
        help="`istioctl proxy-config bootstrap|listener POD -o json` or an Envoy config dump to lint, Zipkin or OpenTelemetry tracer (a file, or - for stdin).",
    ),
]
IstioConfig = Annotated[
    list[Path] | None,
    typer.Option(
        "--istio-config",
        help="Istio YAML files: the effective sampling, tracing provider (zipkin or opentelemetry) and run-id tag.",
        exists=True,
    ),
]
Namespace = Annotated[str, typer.Option("--namespace", help="Namespace of the workload for --istio-config.")]
RequestPath = Annotated[str, typer.Option("--path", help="Path that echoes request headers.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")]
Tracer = Annotated[
    TracerFamily | None,
    typer.Option(
        "--tracer",
        help="The mesh's tracer, Istio's provider: zipkin (B3) or opentelemetry (W3C traceparent). "
        "Default: what the gateway, --bootstrap or --istio-config show.",
        case_sensitive=False,
    ),
]
Mix = Annotated[
    str,
    typer.Option("--mix", help="The header-mode mix the run will send, checked against the mesh's tracer."),
]


def doctor(
    gateway: Gateway = "",
    host: Host = DEFAULT_HOST,
    collector: Collector = "",
    backend: Backend = "",
    bootstrap: Bootstrap = "",
    istio_config: IstioConfig = None,
    namespace: Namespace = "istio-system",
    path: RequestPath = "/headers",
    tracer: Tracer = None,
    mix: Mix = DEFAULT_MIX_TEXT,
    as_json: AsJson = False,
) -> None:
    """Check, before a long run, that the mesh is measurable: gateway and Host routing, header echo,
    x-request-id kept or regenerated, the tracer (Zipkin or OpenTelemetry) and the propagation
    headers it honours, header-mix modes it would ignore, the collector path (POST a probe span
    and read it back), the tracing bootstrap (Zipkin or OpenTelemetry fields), and the sampling,
    tracing provider and run-id tag your Istio YAML configures. Each check prints PASS/WARN/FAIL
    with a one-line fix. Exit code 1 when any check fails.

    Try it on the embedded mesh: `loadgen stack up`, then
    `loadgen doctor --gateway URL --collector URL --backend zipkin:URL`."""
    if not (gateway or collector or backend or bootstrap or istio_config):
        fatal("nothing to check: give --gateway, --collector/--backend, --bootstrap or --istio-config")
    try:
        header_mix = parse_mix(mix)
    except ValueError as exc:
        fatal(f"--mix: {exc}")
    report = run_doctor(
        gateway=gateway or None,
        host=host,
        collector=collector or None,
        backend=backend or None,
        bootstrap=bootstrap or None,
        istio_files=tuple(str(p) for p in istio_config or ()),
        namespace=namespace,
        path=path,
        tracer=tracer,
        mix=header_mix,
    )
    profile = _probe(gateway, host, backend, path, tracer) if gateway and backend else None
    if as_json:
        body = report.to_dict()
        if profile is not None:
            body["profile"] = profile.to_dict()
            body["changes"] = profile_advice(profile)
        out.print_json(json.dumps(body))
    else:
        for line in report.render_text():
            out.print(line, markup=False, highlight=False)
        if profile is not None:
            out.print(profile_table(profile.to_dict()))
            for advice in profile_advice(profile) or ["nothing: loadgen learned every fact it needs"]:
                out.print(f"[bold]change:[/] {escape(advice)}")
    raise typer.Exit(report.exit_code)


def _probe(
    gateway: str, host: str, backend: str, path: str, tracer: TracerFamily | None
) -> MeshProfile | None:
    """The run's own probe, so doctor shows what a run would learn and what to change. A probe
    that cannot run is reported as a note (the checks above already say why)."""
    try:
        reader = parse_backend_spec(backend, BackendOptions.from_env(os.environ))
    except ValueError as exc:
        note(f"probe skipped: {exc}")
        return None
    try:
        run_id = time.strftime("doctor-%Y%m%d-%H%M%S-probe")
        return with_status(
            "probing the mesh",
            lambda status: probe_mesh(gateway, host, reader, run_id, path=path, status=status, tracer=tracer),
        )
    except ProbeError as exc:
        note(f"probe failed: {exc}")
        return None
    finally:
        reader.close()
