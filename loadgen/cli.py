"""The `loadgen` command line: the only place that parses arguments, prints, and exits."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, NoReturn, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer._click import core as click_core  # typer >= 0.25 vendors click
from typer._click import exceptions as click_errors
from typer.core import TyperCommand

from loadgen import __version__
from loadgen.analysis.gates import (
    GateConfig,
    GateConfigError,
    evaluate_gates,
    gates_exit_code,
    gates_headline,
    load_gate_config,
)
from loadgen.analysis.planner import (
    default_precision,
    detection_plan,
    exact_prediction_requests,
    plan_sample_size,
)
from loadgen.analysis.verdicts import DEFAULT_MAX_ERROR_RATE
from loadgen.backends import BackendError, BackendOptions, parse_backend_spec
from loadgen.calibrate import CalibrateOptions, CalibrationError
from loadgen.calibrate import calibrate as run_calibration
from loadgen.capacity import CapacityOptions, KneeBounds, SafetyBounds, run_capacity
from loadgen.doctor import run_doctor
from loadgen.exitcodes import EXIT_CODE_TABLE, EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED
from loadgen.mesh.istio_config import IstioConfigError, WorkloadMode, effective_sampling, load_istio_files
from loadgen.mesh.profile import MeshProfile, ProfileError, profile_advice
from loadgen.mesh.propagation import DEFAULT_MIX, MODE_SPECS, format_mix, parse_mix
from loadgen.probe import ProbeError, probe_mesh
from loadgen.redact import redact_text
from loadgen.report.compare import compare_summaries, render_comparison_markdown
from loadgen.report.html import render_run_folder
from loadgen.report.junit import render_junit
from loadgen.report.profile_view import profile_table
from loadgen.report.render import render_markdown, render_terminal
from loadgen.run import (
    RunError,
    RunOptions,
    RunResult,
    default_scenario_path,
    execute_run,
    probe_only,
    verify_run,
)
from loadgen.runfolder import RunFolderError, read_summary
from loadgen.stack.envoy import DEFAULT_RUN_ID_TAG, TraceContextOption, TracingConfig
from loadgen.stack.mesh import FANOUT_PATHS, CollectorFaults, EmbeddedMesh, MeshConfig, UpstreamFaults
from loadgen.stack.procs import StackError
from loadgen.validate import http_url_problem, output_dir_problem

app = typer.Typer(
    name="loadgen",
    help=(
        "Prove how Istio/Envoy tracing behaves: send traffic with and without B3 headers through a gateway, "
        "push reference spans straight to the collector, read everything back, and report the collection "
        "rate and sampling fidelity with confidence intervals.\n\n"
        "Start with `loadgen run` (it brings up an embedded real-Envoy mesh when no --gateway is given)."
    ),
    epilog="Exit codes (every command; `gate` uses 0, 1 and 2 only):\n\n"
    + "\n\n".join(f"{code}: {meaning}" for code, meaning in EXIT_CODE_TABLE),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
stack_app = typer.Typer(help="The embedded mesh on its own (real Envoy gateway + sidecar, echo, collector).")
app.add_typer(stack_app, name="stack")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error is one line, however long

MODES_HELP = ", ".join(m.value for m in MODE_SPECS) + " (what each sends and expects: README, Header modes)"


class _CheckedCommand(TyperCommand):
    """A command whose number options are finite (click's ranges let `inf` and `nan` through:
    `nan < 1` is false), whose --gateway/--collector are usable URLs and whose --output can hold
    a run folder, all checked before any work starts."""

    def invoke(self, ctx: click_core.Context) -> Any:
        for param in self.params:
            values = ctx.params.get(param.name or "")
            for value in values if isinstance(values, (list, tuple)) else [values]:
                problem = _value_problem(param.name or "", value)
                if problem:
                    raise click_errors.BadParameter(problem, ctx, cast(Any, param))
        return super().invoke(ctx)


def _value_problem(name: str, value: object) -> str | None:
    """What is wrong with one option value, checked for every command alike."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if name in ("gateway", "collector") and isinstance(value, str) and value:
        problem = http_url_problem(value)
        return f"{problem}: {value}" if problem else None
    if name == "output" and isinstance(value, Path):
        problem = output_dir_problem(value)
        return f"{value} {problem}" if problem else None
    return None


def _error_line(message: str) -> str:
    """`message` as one line for the terminal: credentials redacted, Rich markup escaped."""
    return escape(" ".join(redact_text(message).split()))


def _fatal(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[bold red]error:[/] {_error_line(message)}")
    raise typer.Exit(code)


def _interrupts_as_keyboard_interrupt() -> None:
    """SIGINT, SIGTERM (CI, Kubernetes) and SIGHUP (a closed terminal or SSH session) all end a
    run the same way: the ledger flushed, a partial report, exit 130."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # A background job of a non-interactive shell starts with SIGINT ignored, and Python then
    # installs no handler: without this, Ctrl-C / `kill -INT` would not stop a run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def _version(value: bool) -> None:
    if value:
        out.print(f"loadgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


def _tracing(
    sampling: float,
    spawn_gateway: bool,
    spawn_sidecar: bool,
    flush_ms: int,
    context: TraceContextOption,
    gw: GatewayKnobs | None = None,
    mesh: MeshKnobs | None = None,
) -> TracingConfig:
    if not 0.0 <= sampling <= 100.0:
        _fatal(f"--sampling must be a percentage in [0, 100], got {sampling}")
    gw = gw or GatewayKnobs()
    mesh = mesh or MeshKnobs()
    return TracingConfig(
        sampling_percent=sampling,
        gateway_spawn_upstream_span=spawn_gateway,
        sidecar_spawn_upstream_span=spawn_sidecar,
        flush_interval_ms=flush_ms,
        trace_context_option=context,
        gateway_use_remote_address=gw.use_remote_address,
        gateway_preserve_external_request_id=gw.preserve_request_id,
        gateway_internal_cidrs=tuple(gw.internal_cidrs),
        client_sampling_percent=gw.client_sampling,
        overall_sampling_percent=mesh.overall_sampling,
        sidecar=mesh.sidecar,
        echo_headers=mesh.echo,
        run_id_tag=DEFAULT_RUN_ID_TAG if mesh.run_id_tag else "",
    )


@dataclass
class MeshKnobs:
    """The embedded mesh's shape, for testing verdicts on meshes unlike the default one."""

    sidecar: bool = True
    run_id_tag: bool = True
    echo: bool = True
    overall_sampling: float = 100.0


@dataclass
class GatewayKnobs:
    """How the gateway treats x-request-id and forcing headers (embedded mesh: configures it;
    existing mesh: declares it, so each header mode's expectation is right)."""

    preserve_request_id: bool = False
    use_remote_address: bool = True
    internal_cidrs: list[str] = field(default_factory=list)
    client_sampling: float = 100.0


UpstreamDelayOpt = Annotated[
    float,
    typer.Option(
        "--upstream-delay-ms", help="Embedded mesh: the echo upstream delays every answer this long on average.",
        min=0, rich_help_panel="Embedded mesh",
    ),
]  # fmt: skip
UpstreamDistOpt = Annotated[
    str,
    typer.Option(
        "--upstream-delay-dist",
        help="fixed or exp (exponential) upstream delay.",
        rich_help_panel="Embedded mesh",
    ),
]
UpstreamErrorOpt = Annotated[
    float,
    typer.Option(
        "--upstream-error-rate", help="Embedded mesh: the echo upstream answers 503 to this fraction.",
        min=0, max=1, rich_help_panel="Embedded mesh",
    ),
]  # fmt: skip
CollectorLatencyOpt = Annotated[
    float,
    typer.Option(
        "--collector-latency-ms", help="Embedded mesh: the collector answers every POST this much later.",
        min=0, rich_help_panel="Embedded mesh",
    ),
]  # fmt: skip


def _upstream(delay_ms: float, dist: str, error_rate: float, seed: int | None) -> UpstreamFaults:
    if dist not in ("fixed", "exp"):
        _fatal(f"--upstream-delay-dist must be fixed or exp, got {dist!r}")
    return UpstreamFaults(delay_ms_mean=delay_ms, delay_dist=dist, error_rate=error_rate, seed=seed)


GatewayOpt = Annotated[
    str,
    typer.Option(
        "--gateway",
        help="An existing gateway URL, e.g. http://127.0.0.1:30000.",
        rich_help_panel="Existing mesh",
    ),
]
HostOpt = Annotated[
    str, typer.Option("--host", help="Host header the gateway routes on.", rich_help_panel="Existing mesh")
]
CollectorOpt = Annotated[
    str,
    typer.Option(
        "--collector",
        help="Where reference spans go (Zipkin v2 POST /api/v2/spans), e.g. http://127.0.0.1:9411.",
        rich_help_panel="Existing mesh",
    ),
]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Parent folder of the run folder.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for the header-mode sequence.")]
DEFAULT_HOST = "httpbin.istioinaction.io"


PreserveOpt = Annotated[
    bool,
    typer.Option(
        "--gateway-preserve-request-id",
        help="The gateway keeps a client x-request-id (preserve_external_request_id; Istio: off). "
        "Then crafted ids (mode xrid_crafted) make each sampling decision known before sending.",
        rich_help_panel="Gateway behaviour",
    ),
]
RemoteAddrOpt = Annotated[
    bool,
    typer.Option(
        "--gateway-use-remote-address/--no-gateway-use-remote-address",
        help="The gateway is an edge (use_remote_address; Istio: on).",
        rich_help_panel="Gateway behaviour",
    ),
]
InternalCidrOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--gateway-internal-cidr",
        help="Clients the gateway treats as internal (internal_address_config; allows x-envoy-force-trace). Repeatable.",
        rich_help_panel="Gateway behaviour",
    ),
]
ClientSamplingOpt = Annotated[
    float,
    typer.Option(
        "--client-sampling",
        help="Envoy tracing.client_sampling percent (x-client-trace-id forcing; default 100).",
        min=0,
        max=100,
        rich_help_panel="Gateway behaviour",
    ),
]


ProbeOpt = Annotated[
    bool,
    typer.Option(
        "--probe/--no-probe",
        help="Learn the mesh first (trace shape, echo, x-request-id handling, forcing headers, "
        "run-id tag, time to queryable) with a few crafted requests; its profile sets the expectations. "
        "--no-probe leaves unlearned facts unknown: the verdicts that need them are inconclusive.",
        rich_help_panel="Mesh profile",
    ),
]
ProfileOpt = Annotated[
    Path | None,
    typer.Option(
        "--profile",
        help="Reuse a saved mesh-profile.json (from `loadgen probe` or an earlier run) instead of probing.",
        rich_help_panel="Mesh profile",
        dir_okay=False,
    ),
]


SamplingOpt = Annotated[
    float,
    typer.Option(
        "--sampling",
        help="Embedded mesh: Envoy random_sampling percent (Istio's default is 1). Also the expected rate.",
        rich_help_panel="Embedded mesh",
    ),
]
SpawnGwOpt = Annotated[
    bool,
    typer.Option(
        "--gateway-upstream-span/--no-gateway-upstream-span",
        help="Embedded mesh: the gateway adds a CLIENT span per request (spawn_upstream_span; Istio >= 1.28 default).",
        rich_help_panel="Embedded mesh",
    ),
]
SpawnScOpt = Annotated[
    bool,
    typer.Option(
        "--sidecar-upstream-span/--no-sidecar-upstream-span",
        help="Embedded mesh: the sidecar adds a CLIENT span per request.",
        rich_help_panel="Embedded mesh",
    ),
]
FlushOpt = Annotated[
    int,
    typer.Option(
        "--flush-interval-ms",
        help="Embedded mesh: Envoy's Zipkin flush timer (tracing.zipkin.flush_interval_ms; Envoy default 5000).",
        min=1,
        max=3_600_000,
        rich_help_panel="Embedded mesh",
    ),
]
ContextOpt = Annotated[
    TraceContextOption,
    typer.Option(
        "--trace-context", help="Embedded mesh: Zipkin trace_context_option.", rich_help_panel="Embedded mesh"
    ),
]
SidecarOpt = Annotated[
    bool,
    typer.Option(
        "--sidecar/--no-sidecar",
        help="Embedded mesh: a sidecar Envoy stands in front of the app; --no-sidecar routes the gateway straight to it (no /fanout).",
        rich_help_panel="Embedded mesh",
    ),
]
RunIdTagOpt = Annotated[
    bool,
    typer.Option(
        "--run-id-tag/--no-run-id-tag",
        help="Embedded mesh: the Envoys tag every span with the run id (custom tag loadgen.run_id).",
        rich_help_panel="Embedded mesh",
    ),
]
EchoOpt = Annotated[
    bool,
    typer.Option(
        "--echo/--no-echo",
        help='Embedded mesh: the upstream echoes the request headers like httpbin; --no-echo answers {"ok": true}.',
        rich_help_panel="Embedded mesh",
    ),
]
OverallSamplingOpt = Annotated[
    float,
    typer.Option(
        "--overall-sampling",
        help="Embedded mesh: Envoy tracing.overall_sampling percent on the gateway (Istio: 100), which the header-mode expectations follow.",
        min=0,
        max=100,
        rich_help_panel="Embedded mesh",
    ),
]


@app.command(cls=_CheckedCommand)
def run(
    duration: Annotated[float, typer.Option("--duration", "-d", help="Seconds of load.", min=1)] = 10.0,
    users: Annotated[int, typer.Option("--users", "-u", help="Concurrent Locust users.", min=1)] = 10,
    spawn_rate: Annotated[
        float, typer.Option("--spawn-rate", "-r", help="Users started per second.", min=0.1)
    ] = 10.0,
    rate: Annotated[
        float,
        typer.Option("--rate", help="Target requests/s over all users (0 = as fast as they go).", min=0),
    ] = 0.0,
    mix: Annotated[
        str,
        typer.Option("--mix", help=f"Header-mode weights MODE=W,... Modes: {MODES_HELP}."),
    ] = format_mix(DEFAULT_MIX),
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario", help="A locustfile with TracedUser subclasses (default: scenarios/mesh.py's user)."
        ),
    ] = "",
    path: Annotated[
        str,
        typer.Option(
            "--path",
            help="Request path: /headers (one hop), /fanout (the app calls a second service and forwards "
            "the trace headers), /fanout-nopropagate (it forgets to: fragmented traces).",
        ),
    ] = "/headers",
    fanout: Annotated[
        bool,
        typer.Option(
            "--fanout/--no-fanout",
            help="Embedded mesh: run the second hop for /fanout.",
            rich_help_panel="Embedded mesh",
        ),
    ] = True,
    run_id: Annotated[
        str, typer.Option("--run-id", help="Run id (default: timestamp + random suffix).")
    ] = "",
    output: OutputOpt = Path("reports"),
    seed: SeedOpt = None,
    sampling: SamplingOpt = 100.0,
    spawn_gateway: SpawnGwOpt = True,
    spawn_sidecar: SpawnScOpt = False,
    flush_ms: FlushOpt = 1000,
    context: ContextOpt = TraceContextOption.USE_B3,
    preserve_request_id: PreserveOpt = False,
    use_remote_address: RemoteAddrOpt = True,
    internal_cidr: InternalCidrOpt = None,
    client_sampling: ClientSamplingOpt = 100.0,
    sidecar: SidecarOpt = True,
    run_id_tag: RunIdTagOpt = True,
    echo: EchoOpt = True,
    overall_sampling: OverallSamplingOpt = 100.0,
    id_style: Annotated[
        str,
        typer.Option(
            "--id-style",
            help="Injected trace ids: random, or k6 (time-prefixed like k6's, for samplers that hash ids).",
        ),
    ] = "random",
    xrid_sampled_fraction: Annotated[
        float | None,
        typer.Option(
            "--xrid-sampled-fraction",
            help="Mode xrid_crafted: share of ids crafted to be sampled (default 0.5).",
            min=0,
            max=1,
        ),
    ] = None,
    upstream_delay_ms: UpstreamDelayOpt = 0.0,
    upstream_delay_dist: UpstreamDistOpt = "fixed",
    upstream_error_rate: UpstreamErrorOpt = 0.0,
    collector_latency_ms: CollectorLatencyOpt = 0.0,
    drop_probability: Annotated[
        float,
        typer.Option(
            "--collector-drop",
            help="Embedded mesh: the collector silently drops each span with this probability (demonstrates loss).",
            rich_help_panel="Embedded mesh",
            min=0.0,
            max=1.0,
        ),
    ] = 0.0,
    gateway: GatewayOpt = "",
    host: HostOpt = DEFAULT_HOST,
    collector: CollectorOpt = "",
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Where traces are read back: zipkin:URL, jaeger:URL (query API, e.g. http://host:16686/jaeger), "
            "jaeger-v3:URL, or auto:URL. Credentials come from LOADGEN_BACKEND_TOKEN or "
            "LOADGEN_BACKEND_USER/LOADGEN_BACKEND_PASSWORD (never written to reports).",
            rich_help_panel="Existing mesh",
        ),
    ] = "",
    backend_header: Annotated[
        list[str] | None,
        typer.Option(
            "--backend-header",
            help="Extra header for the backend, 'Name: value' (repeatable).",
            rich_help_panel="Existing mesh",
        ),
    ] = None,
    backend_ca: Annotated[
        str,
        typer.Option(
            "--backend-ca",
            help="CA bundle (PEM) to verify the backend's TLS certificate.",
            rich_help_panel="Existing mesh",
        ),
    ] = "",
    backend_insecure: Annotated[
        bool,
        typer.Option(
            "--backend-insecure",
            help="Do not verify the backend's TLS certificate.",
            rich_help_panel="Existing mesh",
        ),
    ] = False,
    backend_concurrency: Annotated[
        int | None,
        typer.Option(
            "--backend-concurrency",
            help="Parallel queries to the backend.",
            min=1,
            rich_help_panel="Existing mesh",
        ),
    ] = None,
    search_service: Annotated[
        str,
        typer.Option(
            "--search-service",
            help="Service for the run-tag search (Jaeger needs one, e.g. istio-ingressgateway.istio-system).",
            rich_help_panel="Existing mesh",
        ),
    ] = "",
    expect: Annotated[
        float | None,
        typer.Option(
            "--expect",
            help="Expected sampling percent (default: --sampling on the embedded mesh).",
            rich_help_panel="Existing mesh",
        ),
    ] = None,
    expect_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--expect-from",
            help="Istio YAML (Telemetry, IstioOperator, mesh ConfigMap, proxy.istio.io/config annotations) "
            "to read the expected sampling from, with Istio's precedence (for the ingress gateway).",
            rich_help_panel="Existing mesh",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    expected_spans: Annotated[
        int | None,
        typer.Option(
            "--expected-spans",
            help="Spans a complete sampled trace has; overrides the probed shape (a warning when they disagree).",
            rich_help_panel="Mesh profile",
            min=1,
        ),
    ] = None,
    probe: ProbeOpt = True,
    profile: ProfileOpt = None,
    reference_rate: Annotated[
        float,
        typer.Option(
            "--reference-rate",
            help="Reference traces/s sent straight to the collector (0 = off).",
            min=0,
            rich_help_panel="Reference spans",
        ),
    ] = 50.0,
    reference_children: Annotated[
        int,
        typer.Option(
            "--reference-children",
            help="Child spans per reference trace.",
            min=0,
            rich_help_panel="Reference spans",
        ),
    ] = 2,
    quiet: Annotated[
        float | None,
        typer.Option(
            "--quiet",
            help="Read-back stops when no trace completed for this many seconds "
            "(default: the probed time to queryable + 1 s; else Envoy's flush interval + 1 s).",
            min=0,
            rich_help_panel="Read-back",
        ),
    ] = None,
    max_wait: Annotated[
        float,
        typer.Option(
            "--max-wait",
            help="Give up polling for late traces after this many seconds.",
            min=0,
            rich_help_panel="Read-back",
        ),
    ] = 60.0,
    min_collection: Annotated[
        float,
        typer.Option(
            "--min-collection",
            help="Collection rate below this fails the run.",
            min=0,
            max=1,
            rich_help_panel="Verdicts",
        ),
    ] = 0.99,
    max_error_rate: Annotated[
        float,
        typer.Option(
            "--max-error-rate",
            help="A share of failed requests above this (a fraction: 0.05 = 5 %) fails the run's "
            "load_delivered verdict; a run that made no request fails it whatever the value.",
            min=0,
            max=1,
            rich_help_panel="Verdicts",
        ),
    ] = DEFAULT_MAX_ERROR_RATE,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            help="Locust worker processes on this machine (the master writes one ledger).",
            min=1,
            rich_help_panel="Distributed",
        ),
    ] = 1,
    master: Annotated[
        bool,
        typer.Option(
            "--master",
            help="Be the master for `loadgen worker`s on other machines/pods (needs --expect-workers).",
            rich_help_panel="Distributed",
        ),
    ] = False,
    expect_workers: Annotated[
        int,
        typer.Option(
            "--expect-workers",
            help="With --master: wait for this many workers.",
            min=0,
            rich_help_panel="Distributed",
        ),
    ] = 0,
    master_bind_port: Annotated[
        int,
        typer.Option(
            "--master-bind-port",
            help="With --master: port workers connect to.",
            min=1,
            max=65535,
            rich_help_panel="Distributed",
        ),
    ] = 5557,
    as_json: Annotated[bool, typer.Option("--json", help="Print summary.json instead of tables.")] = False,
) -> None:
    """Run a load test and report collection rate and sampling fidelity.

    Without --gateway it starts the embedded mesh (real Envoy gateway + sidecar, echo upstream,
    Zipkin-compatible collector) on 127.0.0.1. Writes reports/<run-id>/ (summary.json, report.md,
    ledger.jsonl, reference.jsonl, fetched.jsonl).

    Exit codes: the table at the end of `loadgen --help` (1 a verdict failed, 3 inconclusive,
    4 a component failed, 130 interrupted: those last two write a partial report).
    """
    try:
        parse_mix(mix)
    except ValueError as exc:
        _fatal(f"--mix: {exc}")
    if id_style not in ("random", "k6"):
        _fatal(f"--id-style must be random or k6, got {id_style!r}")
    if not sidecar and not gateway and fanout and path.split("?", 1)[0] in FANOUT_PATHS:
        _fatal(f"--path {path} needs the sidecar (the app calls out through it); drop --no-sidecar")
    if master and not expect_workers:
        _fatal("--master needs --expect-workers N (how many `loadgen worker`s to wait for)")
    if master and processes > 1:
        _fatal("give either --processes (workers on this machine) or --master (workers elsewhere), not both")
    if expect_from:
        if expect is not None:
            _fatal("give either --expect or --expect-from, not both")
        expect = _expected_from_istio(expect_from)
    opts = RunOptions(
        run_id=run_id,
        output_dir=output,
        duration_s=duration,
        users=users,
        spawn_rate=spawn_rate,
        rate=rate,
        mix=mix,
        scenario=scenario,
        path=path,
        fanout=fanout,
        seed=seed,
        tracing=_tracing(
            sampling,
            spawn_gateway,
            spawn_sidecar,
            flush_ms,
            context,
            GatewayKnobs(preserve_request_id, use_remote_address, list(internal_cidr or ()), client_sampling),
            MeshKnobs(sidecar, run_id_tag, echo, overall_sampling),
        ),  # fmt: skip
        faults=CollectorFaults(drop_probability=drop_probability, added_latency_ms=collector_latency_ms),
        upstream=_upstream(upstream_delay_ms, upstream_delay_dist, upstream_error_rate, seed),
        id_style=id_style,
        xrid_sampled_fraction=xrid_sampled_fraction,
        gateway=gateway,
        host=host,
        collector=collector,
        backend=backend,
        backend_flags=_backend_flags(backend_header, backend_ca, backend_insecure, backend_concurrency),
        search_service=search_service or None,
        expect_percent=expect,
        expected_spans=expected_spans,
        probe=probe,
        profile_path=profile,
        reference_rate=reference_rate,
        reference_children=reference_children,
        quiet_s=quiet,
        max_wait_s=max_wait,
        min_collection=min_collection,
        max_error_rate=max_error_rate,
        processes=processes,
        expect_workers=expect_workers if master else 0,
        master_bind_port=master_bind_port,
    )
    _crash_folder(opts.output_dir / opts.resolved_run_id())
    try:
        with err.status("starting") as spinner:
            result = execute_run(opts, lambda msg: spinner.update(_error_line(msg)))
    except (RunError, StackError) as exc:
        _fatal(str(exc))
    if as_json:
        out.print_json(json.dumps(result.summary))
    else:
        if result.summary.get("profile"):
            out.print(profile_table(result.summary["profile"]))
        for table in render_terminal(result.summary):
            out.print(table)
        for note in result.summary.get("notes", []):
            err.print(f"[yellow]note:[/] {_error_line(note)}")
        out.print(
            f"report: {result.run_dir / 'report.html'} ({result.run_dir / 'report.md'})  "
            f"summary: {result.run_dir / 'summary.json'}",
            markup=False,
        )
    _print_component_failure(result.summary)
    raise typer.Exit(result.exit_code)


def _print_component_failure(summary: dict[str, Any]) -> None:
    """Exit 4's message: what failed, and the last lines of its log."""
    failure = summary.get("component_failure")
    if not failure:
        return
    where = f" (log: {failure['log_path']})" if failure.get("log_path") else ""
    headline = f"{failure['component']} failed: {failure['reason']}{where}"
    err.print(f"[bold red]error:[/] {_error_line(headline)}")
    for line in failure.get("log_tail") or ():
        err.print(f"  | {line}", markup=False, highlight=False)


def _backend_flags(
    headers: list[str] | None, ca: str, insecure: bool, concurrency: int | None
) -> dict[str, object]:
    parsed: dict[str, str] = {}
    for item in headers or ():
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            _fatal(f"--backend-header must look like 'Name: value', got {item!r}")
        parsed[name.strip()] = value.strip()
    if ca and insecure:
        _fatal("give either --backend-ca or --backend-insecure, not both")
    verify: bool | str | None = ca or (False if insecure else None)
    return {"headers": parsed or None, "verify": verify, "concurrency": concurrency}


def _expected_from_istio(files: list[Path]) -> float:
    try:
        resources = load_istio_files(files)
    except (OSError, IstioConfigError) as exc:
        _fatal(f"--expect-from: {exc}")
    eff = effective_sampling(resources, "istio-system", {"istio": "ingressgateway"}, WorkloadMode.CLIENT)
    err.print(f"expected sampling {eff.percent:g} % from {eff.source}", markup=False)
    return eff.percent


@app.command(cls=_CheckedCommand)
def plan(
    expect: Annotated[
        float, typer.Option("--expect", help="The configured sampling percent, e.g. 1.", min=0, max=100)
    ],
    precision: Annotated[
        float | None,
        typer.Option(
            "--precision",
            help="Wanted ± in percentage points, e.g. 0.1 (default: 10 % of the rarer outcome).",
            min=0,
        ),
    ] = None,
    confidence: Annotated[
        float, typer.Option("--confidence", help="Confidence level.", min=0.5, max=0.9999)
    ] = 0.95,
    actual: Annotated[
        float | None,
        typer.Option(
            "--actual",
            help="Also: requests to catch a proxy really sampling at this percent.",
            min=0,
            max=100,
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", help="With --actual: false-fail probability of the test.")
    ] = 0.001,
    power: Annotated[
        float, typer.Option("--power", help="With --actual: probability of catching it.")
    ] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How many decision-free requests a sampling calibration needs: for a ± interval around the
    measured rate (Wald, Wilson, Clopper-Pearson), and, with --actual, to catch a proxy sampling at
    A % while configured with P % (statistics vs exact x-request-id prediction)."""
    fraction = expect / 100.0
    if not 0.0 < fraction < 1.0:
        _fatal("--expect must be strictly between 0 and 100 (at 0 or 100 every decision is the same)")
    prec = precision / 100.0 if precision is not None else default_precision(fraction)
    try:
        sample = plan_sample_size(fraction, prec, confidence)
        exact = exact_prediction_requests(prec, confidence)
        detect = detection_plan(expect, actual, alpha, power) if actual is not None else None
    except ValueError as exc:
        _fatal(str(exc))
    if as_json:
        doc = {
            "sample": {**sample.__dict__},
            "exact_prediction_requests": exact,
            "detection": detect.to_dict() if detect else None,
        }
        out.print_json(json.dumps(doc))
        return
    out.print(
        f"{expect:g} % ± {prec * 100:g} points at {confidence:.0%} confidence needs "
        f"{sample.clopper_pearson:,} decision-free requests (Clopper-Pearson, exact; Wilson {sample.wilson:,}, "
        f"normal approximation {sample.wald:,})."
    )
    out.print(
        f"With every decision checked against Envoy's x-request-id rule: {exact:,} agreeing decisions bound the "
        f"effective rate within ± {prec * 100:g} points of the rule at {confidence:.0%}."
    )
    if detect is not None:
        stat = f"{detect.statistical_n:,}" if detect.statistical_n else "never (same rule)"
        ex = f"{detect.exact_n:,}" if detect.exact_n else "never (same rule)"
        out.print(
            f"To catch a proxy at {actual:g} % told {expect:g} % (power {power:.0%}): statistics {stat} requests "
            f"(exact binomial test, alpha {alpha:g}); exact prediction {ex} requests "
            f"(each disagrees with probability {detect.mismatch_probability:.4f})."
        )


@app.command(cls=_CheckedCommand)
def calibrate(
    expect: Annotated[
        float | None,
        typer.Option("--expect", help="The configured sampling percent to check.", min=0, max=100),
    ] = None,
    expect_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--expect-from",
            help="Istio YAML to read the configured sampling from.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    precision: Annotated[
        float | None,
        typer.Option(
            "--precision", help="Wanted ± in percentage points (default: 10 % of the rarer outcome)."
        ),
    ] = None,
    confidence: Annotated[float, typer.Option("--confidence", help="Confidence level.")] = 0.95,
    max_requests: Annotated[
        int, typer.Option("--max-requests", help="Cap on decision-free requests (0 = the plan).", min=0)
    ] = 0,
    looks: Annotated[int, typer.Option("--looks", help="Planned looks for early stopping.", min=1)] = 10,
    sequential: Annotated[
        bool,
        typer.Option("--sequential/--no-sequential", help="Stop early at planned looks (alpha spending)."),
    ] = True,
    statistics_only: Annotated[
        bool,
        typer.Option(
            "--statistics-only", help="Ignore the exact x-request-id prediction; decide by statistics."
        ),
    ] = False,
    crafted_ids: Annotated[
        bool,
        typer.Option("--crafted-ids", help="Send crafted x-request-ids (needs a gateway that keeps them)."),
    ] = False,
    sampling: Annotated[
        float | None,
        typer.Option("--sampling", help="Embedded mesh: the gateway's real sampling (default: --expect)."),
    ] = None,
    preserve_request_id: PreserveOpt = False,
    sidecar: SidecarOpt = True,
    run_id_tag: RunIdTagOpt = True,
    echo: EchoOpt = True,
    overall_sampling: OverallSamplingOpt = 100.0,
    users: Annotated[int, typer.Option("--users", "-u", min=1, help="Concurrent users.")] = 10,
    rate: Annotated[
        float, typer.Option("--rate", min=0, help="Target req/s (0 = as fast as possible).")
    ] = 0.0,
    gateway: GatewayOpt = "",
    host: HostOpt = DEFAULT_HOST,
    backend: Annotated[
        str, typer.Option("--backend", help="Where traces are read back.", rich_help_panel="Existing mesh")
    ] = "",
    calibration_id: Annotated[
        str, typer.Option("--calibration-id", help="Folder name (default: generated).")
    ] = "",
    probe: ProbeOpt = True,
    profile: ProfileOpt = None,
    output: OutputOpt = Path("reports"),
    seed: SeedOpt = None,
) -> None:
    """Measure the gateway's effective sampling rate to a planned precision with decision-free
    requests; stop early when Envoy's x-request-id rule or the sequential test settles it.
    Writes calibration.json/.md. Exit 0 pass, 1 fail, 3 inconclusive, 2 error, 130 interrupted."""
    if expect_from:
        if expect is not None:
            _fatal("give either --expect or --expect-from, not both")
        expect = _expected_from_istio(expect_from)
    if expect is None:
        _fatal("give --expect PERCENT (the sampling you configured) or --expect-from FILE")
    tracing = None
    if not gateway:
        real = expect if sampling is None else sampling
        knobs = MeshKnobs(sidecar, run_id_tag, echo, overall_sampling)
        tracing = replace(
            _tracing(real, True, False, 1000, TraceContextOption.USE_B3, mesh=knobs),
            gateway_preserve_external_request_id=preserve_request_id,
        )
    opts = CalibrateOptions(
        expected_percent=expect,
        precision=precision / 100.0 if precision is not None else None,
        confidence=confidence,
        max_requests=max_requests,
        sequential=sequential,
        looks=looks,
        use_prediction=not statistics_only,
        crafted_ids=crafted_ids,
        calibration_id=calibration_id,
        output_dir=output,
        users=users,
        rate=rate,
        seed=seed,
        gateway=gateway,
        host=host,
        backend=backend,
        tracing=tracing,
        probe=probe,
        profile_path=profile,
    )
    try:
        with err.status("calibrating") as spinner:
            result = run_calibration(opts, lambda msg: spinner.update(_error_line(msg)))
    except (CalibrationError, RunError, StackError, ValueError) as exc:
        _fatal(str(exc))
    out.print((result.cal_dir / "calibration.md").read_text(), markup=False, highlight=False)
    out.print(f"verdict: {result.verdict}   ({result.cal_dir / 'calibration.json'})", markup=False)
    raise typer.Exit(result.exit_code)


@app.command(cls=_CheckedCommand)
def capacity(
    steps: Annotated[
        str,
        typer.Option(
            "--steps",
            help="users:N,N,... (closed-loop users per step) or rate:R,R,... (target req/s per step; users fixed by --step-users).",
        ),
    ] = "users:5,10,20,40",
    step_duration: Annotated[
        float, typer.Option("--step-duration", help="Seconds per step, ramp included.", min=1)
    ] = 20.0,
    ramp: Annotated[
        float,
        typer.Option(
            "--ramp", help="Seconds at each step's start spent reaching it; left out of the numbers.", min=0
        ),
    ] = 3.0,
    step_users: Annotated[
        int, typer.Option("--step-users", help="Rate steps: the fixed user count.", min=1)
    ] = 32,
    user_rate: Annotated[
        float,
        typer.Option("--user-rate", help="Users steps: req/s per user (0 = as fast as it goes).", min=0),
    ] = 0.0,
    slo_p99_ms: Annotated[
        float | None,
        typer.Option("--slo-p99-ms", help="Knee bound: p99 latency SLO.", rich_help_panel="Knee"),
    ] = None,
    max_errors: Annotated[
        float,
        typer.Option(
            "--max-errors", help="Knee bound: error fraction.", min=0, max=1, rich_help_panel="Knee"
        ),
    ] = 0.01,
    min_collection: Annotated[
        float,
        typer.Option(
            "--min-collection", help="Knee bound: mesh collection rate.", min=0, max=1, rich_help_panel="Knee"
        ),
    ] = 0.99,
    min_throughput: Annotated[
        float,
        typer.Option(
            "--min-throughput",
            help="Knee bound: achieved/target req/s (0 = off).",
            min=0,
            max=1,
            rich_help_panel="Knee",
        ),
    ] = 0.9,
    abort_errors: Annotated[
        float,
        typer.Option(
            "--abort-errors",
            help="Safety: stop when live errors exceed this.",
            min=0,
            max=1,
            rich_help_panel="Safety",
        ),
    ] = 0.5,
    abort_collection: Annotated[
        float,
        typer.Option(
            "--abort-collection",
            help="Safety: stop when live collection falls below this.",
            min=0,
            max=1,
            rich_help_panel="Safety",
        ),
    ] = 0.5,
    no_safety: Annotated[
        bool, typer.Option("--no-safety", help="Never stop early.", rich_help_panel="Safety")
    ] = False,
    sampling: SamplingOpt = 100.0,
    spawn_gateway: SpawnGwOpt = True,
    spawn_sidecar: SpawnScOpt = False,
    flush_ms: FlushOpt = 1000,
    context: ContextOpt = TraceContextOption.USE_B3,
    sidecar: SidecarOpt = True,
    run_id_tag: RunIdTagOpt = True,
    echo: EchoOpt = True,
    overall_sampling: OverallSamplingOpt = 100.0,
    ingest_limit: Annotated[
        float,
        typer.Option(
            "--collector-ingest-limit",
            help="Embedded mesh: the collector keeps at most this many spans/s; the excess is answered 202 and "
            "discarded (an overloaded collector). 0 = no limit.",
            min=0,
            rich_help_panel="Embedded mesh",
        ),
    ] = 0.0,
    upstream_delay_ms: UpstreamDelayOpt = 0.0,
    upstream_delay_dist: UpstreamDistOpt = "fixed",
    upstream_error_rate: UpstreamErrorOpt = 0.0,
    collector_latency_ms: CollectorLatencyOpt = 0.0,
    collector_drop: Annotated[
        float,
        typer.Option(
            "--collector-drop",
            help="Embedded mesh: drop each span with this probability.",
            min=0,
            max=1,
            rich_help_panel="Embedded mesh",
        ),
    ] = 0.0,
    mix: Annotated[str, typer.Option("--mix", help="Header-mode weights MODE=W,...")] = format_mix(
        DEFAULT_MIX
    ),
    gateway: GatewayOpt = "",
    host: HostOpt = DEFAULT_HOST,
    collector: CollectorOpt = "",
    backend: Annotated[
        str, typer.Option("--backend", help="Where traces are read back.", rich_help_panel="Existing mesh")
    ] = "",
    expect: Annotated[
        float | None,
        typer.Option("--expect", help="Expected sampling percent.", rich_help_panel="Existing mesh"),
    ] = None,
    probe: ProbeOpt = True,
    profile: ProfileOpt = None,
    reference_rate: Annotated[
        float, typer.Option("--reference-rate", help="Reference traces/s (0 = off).", min=0)
    ] = 5.0,
    run_id: Annotated[str, typer.Option("--run-id", help="Run id.")] = "",
    output: OutputOpt = Path("reports"),
    seed: SeedOpt = None,
) -> None:
    """Step the load up (users or target rate) until the mesh or tracing stops keeping up.

    Per step: throughput, p50/p95/p99, errors, decision rate, mesh/reference collection with 95 %
    intervals, collector ingest spans/s, and the knee (the first step breaking a bound). Writes
    capacity.json, capacity.md and steps.json next to the usual run files (report.html plots the
    steps). Exit codes: 0 steps ran (a knee is a finding), 1 a safety bound aborted the run,
    2 error, 4 a component failed, 130 interrupted."""
    try:
        parse_mix(mix)
    except ValueError as exc:
        _fatal(f"--mix: {exc}")
    run_opts = RunOptions(
        run_id=run_id,
        output_dir=output,
        mix=mix,
        seed=seed,
        tracing=_tracing(
            sampling,
            spawn_gateway,
            spawn_sidecar,
            flush_ms,
            context,
            mesh=MeshKnobs(sidecar, run_id_tag, echo, overall_sampling),
        ),
        faults=CollectorFaults(
            ingest_limit=ingest_limit, added_latency_ms=collector_latency_ms, drop_probability=collector_drop
        ),
        upstream=_upstream(upstream_delay_ms, upstream_delay_dist, upstream_error_rate, seed),
        gateway=gateway,
        host=host,
        collector=collector,
        backend=backend,
        expect_percent=expect,
        reference_rate=reference_rate,
        probe=probe,
        profile_path=profile,
    )
    opts = CapacityOptions(
        steps=steps,
        step_s=step_duration,
        ramp_s=ramp,
        step_users=step_users,
        user_rate=user_rate,
        bounds=KneeBounds(
            p99_ms=slo_p99_ms,
            max_error_rate=max_errors,
            min_collection=min_collection,
            min_throughput=min_throughput or None,
        ),
        safety=SafetyBounds(max_error_rate=None, min_collection=None)
        if no_safety
        else SafetyBounds(max_error_rate=abort_errors, min_collection=abort_collection),
        run=run_opts,
    )
    try:
        with err.status("capacity run") as spinner:
            result = run_capacity(opts, lambda msg: spinner.update(_error_line(msg)))
    except (RunError, StackError, ValueError) as exc:
        _fatal(str(exc))
    rows = result.rows()
    table = Table(title=f"capacity {result.run.summary['run_id']}", title_justify="left")
    for col in rows[0]:
        table.add_column(str(col), no_wrap=True)
    for row in rows[1:]:
        knee = str(row[-1]).startswith("KNEE")
        table.add_row(*(escape(str(c)) for c in row), style="bold red" if knee else None)
    out.print(table)
    knee_doc = result.document.get("knee") or {}
    if knee_doc.get("detail"):
        out.print(str(knee_doc["detail"]), markup=False)
    if result.abort:
        err.print(f"[yellow]aborted:[/] {_error_line(str(result.abort))}")
    out.print(
        f"capacity: {result.run.run_dir / 'capacity.md'}  report: {result.run.run_dir / 'report.html'}",
        markup=False,
    )
    _print_component_failure(result.run.summary)
    raise typer.Exit(result.exit_code)


@app.command(cls=_CheckedCommand)
def worker(
    master_host: Annotated[
        str, typer.Option("--master-host", help="Host of the `loadgen run --master` process.")
    ],
    master_port: Annotated[int, typer.Option("--master-port", help="Its --master-bind-port.")] = 5557,
    scenario: Annotated[str, typer.Option("--scenario", help="The same locustfile the master uses.")] = "",
) -> None:
    """Generate load for a `loadgen run --master` elsewhere (another machine or pod). Records go to
    the master over Locust's message channel; the master writes the ledger and the report.
    Runs until the master ends the run (or Ctrl-C)."""
    argv = [
        sys.executable, "-m", "locust", "-f", scenario or default_scenario_path(),
        "--worker", "--master-host", master_host, "--master-port", str(master_port),
    ]  # fmt: skip
    try:
        code = subprocess.call(argv)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    raise typer.Exit(code)


@app.command(cls=_CheckedCommand)
def probe(
    gateway: GatewayOpt = "",
    host: HostOpt = DEFAULT_HOST,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Where traces are read: zipkin:URL | jaeger:URL | jaeger-v3:URL | auto:URL.",
            rich_help_panel="Existing mesh",
        ),
    ] = "",
    path: Annotated[
        str, typer.Option("--path", help="Request path to probe (as `run --path`).")
    ] = "/headers",
    sampling: SamplingOpt = 100.0,
    spawn_gateway: SpawnGwOpt = True,
    spawn_sidecar: SpawnScOpt = False,
    context: ContextOpt = TraceContextOption.USE_B3,
    preserve_request_id: PreserveOpt = False,
    use_remote_address: RemoteAddrOpt = True,
    internal_cidr: InternalCidrOpt = None,
    client_sampling: ClientSamplingOpt = 100.0,
    run_id: Annotated[str, typer.Option("--run-id", help="Folder name (default: generated).")] = "",
    output: OutputOpt = Path("reports"),
    seed: SeedOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")] = False,
) -> None:
    """Learn the mesh before measuring it: a few crafted requests (at most 24, about 30 s with the
    read-back) reveal the shape of a sampled trace, header echo, what the gateway does with client
    x-request-ids and forcing headers, B3/W3C continuation, the run-id tag and the time to
    queryable. Writes mesh-profile.json for `run --profile`, and prints what to change.
    Without --gateway it probes the embedded mesh. Exit 0 probed, 2 error, 130 interrupted."""
    opts = RunOptions(
        run_id=run_id,
        output_dir=output,
        path=path,
        seed=seed,
        tracing=_tracing(
            sampling,
            spawn_gateway,
            spawn_sidecar,
            1000,
            context,
            GatewayKnobs(preserve_request_id, use_remote_address, list(internal_cidr or ()), client_sampling),
        ),  # fmt: skip
        gateway=gateway,
        host=host,
        backend=backend,
    )
    try:
        with err.status("probing") as spinner:
            profile_, written = probe_only(opts, lambda msg: spinner.update(_error_line(msg)))
    except (RunError, StackError) as exc:
        _fatal(escape(str(exc)))
    if as_json:
        out.print_json(json.dumps(profile_.to_dict()))
        raise typer.Exit(0)
    out.print(profile_table(profile_.to_dict()))
    for note in profile_.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    for advice in profile_advice(profile_):
        out.print(f"[bold]change:[/] {escape(advice)}")
    out.print(
        f"profile: {escape(str(written))}  (reuse it with `loadgen run --profile {escape(str(written))}`)"
    )


@app.command(cls=_CheckedCommand)
def doctor(
    gateway: Annotated[str, typer.Option("--gateway", help="Gateway URL, e.g. http://127.0.0.1:30000.")] = "",
    host: Annotated[
        str, typer.Option("--host", help="Host header the gateway routes on.")
    ] = "httpbin.istioinaction.io",
    collector: Annotated[
        str,
        typer.Option(
            "--collector",
            help="Collector URL, with the span path if it is not /api/v2/spans (e.g. http://127.0.0.1:9411).",
        ),
    ] = "",
    backend: Annotated[
        str,
        typer.Option(
            "--backend", help="Where traces are read: zipkin:URL | jaeger:URL | jaeger-v3:URL | auto:URL."
        ),
    ] = "",
    bootstrap: Annotated[
        str,
        typer.Option(
            "--bootstrap",
            help="`istioctl proxy-config bootstrap POD -o json` output to lint (a file, or - for stdin).",
        ),
    ] = "",
    istio_config: Annotated[
        list[Path] | None,
        typer.Option(
            "--istio-config", help="Istio YAML files to read the effective sampling from.", exists=True
        ),
    ] = None,
    namespace: Annotated[
        str, typer.Option("--namespace", help="Namespace of the workload for --istio-config.")
    ] = "istio-system",
    path: Annotated[str, typer.Option("--path", help="Path that echoes request headers.")] = "/headers",
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Check, before a long run, that the mesh is measurable: gateway and Host routing, header echo,
    x-request-id kept or regenerated, the collector path (POST a probe span and read it back),
    the tracing bootstrap, and the sampling your Istio YAML configures. Each check prints
    PASS/WARN/FAIL with a one-line fix. Exit code 1 when any check fails.

    Try it on the embedded mesh: `loadgen stack up`, then
    `loadgen doctor --gateway URL --collector URL --backend zipkin:URL`."""
    if not (gateway or collector or backend or bootstrap or istio_config):
        _fatal("nothing to check: give --gateway, --collector/--backend, --bootstrap or --istio-config")
    report_ = run_doctor(
        gateway=gateway or None,
        host=host,
        collector=collector or None,
        backend=backend or None,
        bootstrap=bootstrap or None,
        istio_files=tuple(str(p) for p in istio_config or ()),
        namespace=namespace,
        path=path,
    )
    profile_ = _doctor_probe(gateway, host, backend, path) if gateway and backend else None
    if as_json:
        body = report_.to_dict()
        if profile_ is not None:
            body["profile"] = profile_.to_dict()
            body["changes"] = profile_advice(profile_)
        out.print_json(json.dumps(body))
    else:
        for line in report_.render_text():
            out.print(line, markup=False, highlight=False)
        if profile_ is not None:
            out.print(profile_table(profile_.to_dict()))
            for advice in profile_advice(profile_) or ["nothing: loadgen learned every fact it needs"]:
                out.print(f"[bold]change:[/] {escape(advice)}")
    raise typer.Exit(report_.exit_code)


def _doctor_probe(gateway: str, host: str, backend: str, path: str) -> MeshProfile | None:
    """The run's own probe, so doctor shows what a run would learn and what to change. A probe
    that cannot run is reported as a note (the checks above already say why)."""
    try:
        reader = parse_backend_spec(backend, BackendOptions.from_env(os.environ))
    except ValueError as exc:
        err.print(f"[yellow]note:[/] probe skipped: {_error_line(str(exc))}")
        return None
    try:
        with err.status("probing the mesh") as spinner:
            run_id = time.strftime("doctor-%Y%m%d-%H%M%S-probe")
            return probe_mesh(
                gateway, host, reader, run_id, path=path, status=lambda m: spinner.update(_error_line(m))
            )
    except ProbeError as exc:
        err.print(f"[yellow]note:[/] probe failed: {_error_line(str(exc))}")
        return None
    finally:
        reader.close()


@app.command(cls=_CheckedCommand)
def verify(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder (reports/<run-id>).", exists=True, file_okay=False)
    ],
    backend: Annotated[
        str,
        typer.Option(
            "--backend", help="Read from this backend instead of the run's (zipkin:URL, jaeger:URL, ...)."
        ),
    ] = "",
    max_wait: Annotated[
        float, typer.Option("--max-wait", help="Seconds to keep polling for late traces.", min=0)
    ] = 30.0,
) -> None:
    """Re-query the backend for every trace of an earlier run (late spans, a backend that was down),
    re-reconcile and update summary.json/report.md (the run's own summary is kept as
    summary.previous.json, later ones as summary.previous.2.json, ...). A run that never wrote
    summary.json (killed, crashed, out of disk) gets one rebuilt from run.json, the ledger and the
    span store or backend, marked partial. An embedded run is re-read from the span store in its
    run folder."""
    _crash_folder(run_dir)
    result, changes = _verify_or_rebuild(run_dir, backend, max_wait)
    for table in render_terminal(result.summary):
        out.print(table)
    for name, before, after in changes:
        marker = "" if before == after else "  (changed)"
        out.print(f"{name}: {before} -> {after}{marker}", markup=False)
    raise typer.Exit(result.exit_code)


@app.command(cls=_CheckedCommand)
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder (reports/<run-id>).", exists=True, file_okay=False)
    ],
    window: Annotated[
        float,
        typer.Option(
            "--window", help="Seconds per time window in report.html and timeseries.csv.", min=0.001
        ),
    ] = 1.0,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Another run folder to compare with (writes comparison.md/.json).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild",
            help="When summary.json is missing (a killed or crashed run), rebuild it first as "
            "`loadgen verify` does, from run.json, the ledger and the span store or backend.",
        ),
    ] = False,
) -> None:
    """Re-render report.md, report.html, modes.csv, timeseries.csv and the terminal tables from a
    run folder's summary.json; with --baseline, also show what changed against another run."""
    if not os.path.lexists(run_dir / "summary.json"):
        if not rebuild:
            _fatal(
                f"{run_dir} has no summary.json (the run did not finish): `loadgen verify {run_dir}` "
                "or `loadgen report --rebuild` rebuilds it from run.json, the ledger and the span store"
            )
        _crash_folder(run_dir)
        _verify_or_rebuild(run_dir, "", 30.0)
    summary = _read_summary(run_dir)
    (run_dir / "report.md").write_text(render_markdown(summary))
    written = render_run_folder(run_dir, window_s=window)
    for table in render_terminal(summary):
        out.print(table)
    if baseline is not None:
        cmp = compare_summaries(summary, _read_summary(baseline))
        (run_dir / "comparison.json").write_text(json.dumps(cmp, indent=2) + "\n")
        (run_dir / "comparison.md").write_text(render_comparison_markdown(cmp))
        out.print(_comparison_table(cmp))
        for v in cmp["verdict_changes"]:
            out.print(f"verdict {v['verdict']}: {v['baseline']} -> {v['current']}", markup=False)
        written += [run_dir / "comparison.md", run_dir / "comparison.json"]
    for path in [run_dir / "report.md", *written]:
        out.print(f"wrote {path}", markup=False)


def _comparison_table(cmp: dict[str, Any]) -> Table:
    table = Table(title=f"compared with baseline {escape(str(cmp['baseline']))}", title_justify="left")
    for col in ("measure", "baseline", "current", "delta", "change"):
        table.add_column(col)
    for row in cmp["rows"]:
        cells = [row["measure"], row["baseline"], row["current"], row["delta"], row["change"]]
        text = [escape("-" if c is None else f"{c:.4g}" if isinstance(c, float) else str(c)) for c in cells]
        table.add_row(*text, style="bold" if row["change"] in ("changed", "different") else None)
    return table


def _verify_or_rebuild(
    run_dir: Path, backend: str, max_wait: float
) -> tuple[RunResult, list[tuple[str, Any, Any]]]:
    """`verify_run` with a spinner and its errors as one line; says so when it rebuilt summary.json."""
    rebuilding = not os.path.lexists(run_dir / "summary.json")
    try:
        with err.status("rebuilding summary.json" if rebuilding else "verifying") as spinner:
            result, changes = verify_run(
                run_dir,
                lambda msg: spinner.update(_error_line(msg)),
                backend_spec=backend,
                max_wait_s=max_wait,
            )
    except (RunError, StackError, RunFolderError) as exc:
        _fatal(str(exc))
    if rebuilding:
        unknown = ", ".join((result.summary.get("recovered") or {}).get("unknown") or ()) or "nothing"
        err.print(
            f"{run_dir / 'summary.json'} was missing (the run did not finish): rebuilt it from the run folder, "
            f"marked partial; only the live run knew {unknown} (null)",
            markup=False,
            highlight=False,
        )
    return result, changes


def _read_summary(run_dir: Path) -> dict[str, Any]:
    try:
        return read_summary(run_dir / "summary.json")
    except RunFolderError as exc:
        _fatal(str(exc))


@app.command(cls=_CheckedCommand)
def gate(
    run_dir: Annotated[
        Path, typer.Argument(help="A run folder (reports/<run-id>).", exists=True, file_okay=False)
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML with a [gates] table; default ./loadgen.toml when it exists.",
            dir_okay=False,
        ),
    ] = None,
    min_collection: Annotated[
        float | None, typer.Option("--min-collection", min=0, max=1, help="Mesh collection rate floor.")
    ] = None,
    min_reference_collection: Annotated[
        float | None,
        typer.Option("--min-reference-collection", min=0, max=1, help="Reference collection rate floor."),
    ] = None,
    max_error_rate: Annotated[
        float | None,
        typer.Option(
            "--max-error-rate",
            min=0,
            max=1,
            help="Errors / requests ceiling, a fraction as in `run` (default 0.05; 1 allows any share).",
        ),
    ] = None,
    max_p99_ms: Annotated[
        float | None, typer.Option("--max-p99-ms", min=0, help="p99 latency ceiling (slowest mode).")
    ] = None,
    max_leaked: Annotated[
        int | None, typer.Option("--max-leaked", min=0, help="Leaked traces ceiling.")
    ] = None,
    allow_inconclusive: Annotated[
        bool | None,
        typer.Option(
            "--allow-inconclusive/--require-pass", help="Whether an inconclusive sampling verdict passes."
        ),
    ] = None,
    sampling_gate: Annotated[
        bool | None,
        typer.Option("--sampling-gate/--no-sampling-gate", help="Check the sampling verdict at all."),
    ] = None,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write JUnit XML here (one test case per gate).")
    ] = None,
) -> None:
    """Check a finished run against CI thresholds (flags over loadgen.toml [gates]).

    Exit codes: 0 every gate passed, 1 a gate failed, 2 bad configuration or unreadable run.
    A gate whose quantity was never measured fails: a check that checked nothing is not green."""
    summary = _read_summary(run_dir)
    path = config or (Path("loadgen.toml") if Path("loadgen.toml").exists() else None)
    try:
        base = load_gate_config(path) if path else GateConfig()
        cfg = base.merged(
            {
                "min_collection": min_collection,
                "min_reference_collection": min_reference_collection,
                "max_error_rate": max_error_rate,
                "max_p99_ms": max_p99_ms,
                "max_leaked": max_leaked,
                "allow_inconclusive": allow_inconclusive,
                "sampling": sampling_gate,
            }
        )
    except GateConfigError as exc:
        _fatal(str(exc))
    results = evaluate_gates(summary, cfg)
    for result in results:
        out.print(
            f"{'PASS' if result.passed else 'FAIL'}  {result.name}: {result.message}",
            markup=False,
            highlight=False,
        )
    out.print(gates_headline(results), markup=False, highlight=False)
    if junit:
        props = {"run_id": str(summary.get("run_id")), "run_dir": str(run_dir)}
        junit.write_text(render_junit(results, "loadgen.analysis.gates", properties=props))
    raise typer.Exit(gates_exit_code(results))


@stack_app.command("up", cls=_CheckedCommand)
def stack_up(
    sampling: SamplingOpt = 100.0,
    spawn_gateway: SpawnGwOpt = True,
    spawn_sidecar: SpawnScOpt = False,
    flush_ms: FlushOpt = 1000,
    context: ContextOpt = TraceContextOption.USE_B3,
    preserve_request_id: PreserveOpt = False,
    use_remote_address: RemoteAddrOpt = True,
    internal_cidr: InternalCidrOpt = None,
    client_sampling: ClientSamplingOpt = 100.0,
    sidecar: SidecarOpt = True,
    run_id_tag: RunIdTagOpt = True,
    echo: EchoOpt = True,
    overall_sampling: OverallSamplingOpt = 100.0,
    workdir: Annotated[
        Path, typer.Option("--workdir", help="Folder for configs, logs and the collector's span store.")
    ] = Path("reports/stack"),
) -> None:
    """Run the embedded mesh in the foreground until Ctrl-C; prints its URLs."""
    mesh = EmbeddedMesh(
        workdir,
        MeshConfig(
            tracing=_tracing(
                sampling,
                spawn_gateway,
                spawn_sidecar,
                flush_ms,
                context,
                GatewayKnobs(
                    preserve_request_id, use_remote_address, list(internal_cidr or ()), client_sampling
                ),
                MeshKnobs(sidecar, run_id_tag, echo, overall_sampling),
            )  # fmt: skip
        ),
    )
    try:
        mesh.start()
    except StackError as exc:
        _fatal(f"the embedded mesh did not start: {exc}")
    try:
        assert mesh.gateway is not None
        out.print(f"gateway        {mesh.gateway_url}   (Host: {mesh.host_header})", markup=False)
        out.print(f"gateway admin  {mesh.gateway.admin_url}")
        if mesh.sidecar is not None:
            out.print(f"sidecar admin  {mesh.sidecar.admin_url}")
        out.print(
            f"collector      {mesh.collector_url}   (Zipkin v2 API: /api/v2/spans, /api/v2/trace/ID, ...)"
        )
        out.print(f"workdir        {workdir}", markup=False)
        out.print("")
        out.print(f"try: curl -s -H 'Host: {mesh.host_header}' {mesh.gateway_url}/headers", markup=False)
        out.print(f"     locust -f scenarios/mesh.py --host {mesh.gateway_url}")
        out.print("Ctrl-C stops everything.")
        while True:
            time.sleep(1.0)
            mesh.check_alive()
    except KeyboardInterrupt:
        out.print("stopping")
    except StackError as exc:
        _fatal(str(exc))
    finally:
        mesh.stop()


# Exceptions that are the user's or the environment's doing, not loadgen's: one line, exit 2.
# (Commands turn the ones they expect into `_fatal` lines themselves; this is the net below.)
_EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    RunError,
    StackError,
    BackendError,
    ProbeError,
    ProfileError,
    IstioConfigError,
    GateConfigError,
    CalibrationError,
    RunFolderError,
)

# Where a crash's traceback goes: the run folder once a command knows it (`_crash_folder`).
_crash_dir: Path | None = None


def _crash_folder(path: Path) -> None:
    global _crash_dir  # the one piece of state main() reads after a crash
    _crash_dir = path


def _os_error_message(exc: OSError) -> str:
    """`[Errno 28] No space left on device: 'x'` as `cannot write x: No space left on device`."""
    what = exc.strerror or str(exc)
    if exc.filename is None:
        return what
    action = "cannot use"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        action = "cannot write"
    elif exc.errno == errno.ENOENT:
        action = "not found:"
        return f"{action} {exc.filename}"
    return f"{action} {exc.filename}: {what}"


def _save_traceback(exc: BaseException) -> Path:
    """The traceback, in the run folder when there is one, else under the user's cache folder."""
    text = redact_text("".join(traceback.format_exception(exc)))
    name = f"loadgen-crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "loadgen"
    for folder in (_crash_dir, cache, Path(tempfile.gettempdir())):
        if folder is None or (folder is not cache and not folder.is_dir()):
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"loadgen {__version__}\n{redact_text(' '.join(sys.argv))}\n\n{text}")
            return folder / name
        except OSError:
            continue
    raise exc


def main() -> None:
    """The console script: every way out is one exit code from `loadgen.exitcodes`, and no
    traceback reaches the terminal."""
    _interrupts_as_keyboard_interrupt()
    try:
        # Not standalone: click's own usage errors come here too, to be one line like the rest.
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError:
        sys.exit(EXIT_ERROR)  # the help is already printed
    except click_errors.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err.print(f"[bold red]error:[/] {_error_line(exc.format_message())}{escape(hint)}")
        sys.exit(EXIT_ERROR)
    except typer.Abort:
        err.print("aborted")
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except _EXPECTED_ERRORS as exc:
        message = _os_error_message(exc) if isinstance(exc, OSError) else str(exc)
        err.print(f"[bold red]error:[/] {_error_line(message)}")
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        try:
            saved = f"traceback saved to {_save_traceback(exc)}"
        except Exception:
            saved = "the traceback could not be saved"
        line = _error_line(f"{type(exc).__name__}: {exc}")
        err.print(f"[bold red]internal error[/] (a bug in loadgen): {line}; {escape(saved)}")
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
