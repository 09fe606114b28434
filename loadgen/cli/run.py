"""`loadgen run`: a load test, read back and reported."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from loadgen.analysis.verdicts import DEFAULT_MAX_ERROR_RATE
from loadgen.backends import BackendOptions
from loadgen.cli.console import err, fatal, note, out, print_component_failure, print_outcome, with_status
from loadgen.cli.crash import crash_folder
from loadgen.cli.groups import (
    FaultFlags,
    GatewayFlags,
    MeshFlags,
    TracingFlags,
    collector_faults,
    option_groups,
    tracing_config,
    upstream_faults,
)
from loadgen.cli.inputs import check_mix, expected_percent, reference_flags
from loadgen.cli.options import (
    DEFAULT_HOST,
    DEFAULT_MIX_TEXT,
    EMBEDDED,
    EXISTING,
    MESH_PROFILE,
    READ_BACK_PANEL,
    CollectorOpt,
    ConfigOpt,
    ExpectOpt,
    GatewayOpt,
    HostOpt,
    MixOpt,
    OutputOpt,
    ProbeOpt,
    ProfileOpt,
    RateOpt,
    ReadbackFractionOpt,
    ReadbackSampleOpt,
    ReferenceGrpcEndpointOpt,
    ReferenceProtocolOpt,
    ReferenceRateOpt,
    RunIdOpt,
    SeedOpt,
    UsersOpt,
    duration_at_least,
)
from loadgen.report.profile_view import profile_table
from loadgen.report.render import render_terminal
from loadgen.run import RunError, RunOptions, RunResult, execute_run
from loadgen.run.webui import free_port, web_url
from loadgen.stack.mesh import FANOUT_PATHS
from loadgen.stack.procs import StackError

READ_BACK = READ_BACK_PANEL
DISTRIBUTED = "Distributed"
WEB_UI = "Web UI"

Duration = Annotated[
    float,
    typer.Option(
        "--duration", "-d", "-t", help="How long the load runs: seconds, or 30s, 5m, 1h30m (Locust's -t).",
        parser=duration_at_least(1), metavar="DURATION",
    ),
]  # fmt: skip
Headless = Annotated[
    bool,
    typer.Option(
        "--headless", help="Accepted as in Locust; changes nothing (a run is headless unless --web)."
    ),
]
CsvPrefix = Annotated[
    str,
    typer.Option(
        "--csv",
        help="Also write Locust's CSV statistics to PREFIX_stats.csv, PREFIX_stats_history.csv, "
        "PREFIX_failures.csv and PREFIX_exceptions.csv, as locust --csv does.",
        metavar="PREFIX",
    ),
]
KeepSpans = Annotated[
    bool,
    typer.Option(
        "--keep-spans",
        help="Also write fetched.jsonl: what the read-back found for every trace (spans, services, "
        "shape). Off by default: report.html is complete without it, but `loadgen report` redraws "
        "the collection-over-time chart only from it.",
        rich_help_panel=READ_BACK,
    ),
]
SpawnRate = Annotated[float, typer.Option("--spawn-rate", "-r", help="Users started per second.", min=0.1)]
Scenario = Annotated[
    str,
    typer.Option(
        "--scenario", help="A locustfile with TracedUser subclasses (default: scenarios/mesh.py's user)."
    ),
]
RequestPath = Annotated[
    str,
    typer.Option(
        "--path",
        help="Request path: /headers (one hop), /fanout (the app calls a second service and forwards "
        "the trace headers), /fanout-nopropagate (it forgets to: fragmented traces).",
    ),
]
Fanout = Annotated[
    bool,
    typer.Option(
        "--fanout/--no-fanout",
        help="Embedded mesh: run the second hop for /fanout.",
        rich_help_panel=EMBEDDED,
    ),
]
IdStyle = Annotated[
    str,
    typer.Option(
        "--id-style",
        help="Injected trace ids: random, or k6 (time-prefixed like k6's, for samplers that hash ids).",
    ),
]
XridFraction = Annotated[
    float | None,
    typer.Option(
        "--xrid-sampled-fraction",
        help="Mode xrid_crafted: share of ids crafted to be sampled (default 0.5).",
        min=0,
        max=1,
    ),
]
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Where traces are read back: zipkin:URL, jaeger:URL (query API, e.g. http://host:16686/jaeger), "
        "jaeger-v3:URL, tempo:URL (Grafana Tempo, e.g. http://tempo:3200), or auto:URL. Credentials come "
        "from LOADGEN_BACKEND_TOKEN or LOADGEN_BACKEND_USER/LOADGEN_BACKEND_PASSWORD (never written to "
        "reports).",
        rich_help_panel=EXISTING,
    ),
]
BackendHeader = Annotated[
    list[str] | None,
    typer.Option(
        "--backend-header",
        help="Extra header for the backend, 'Name: value' (repeatable).",
        rich_help_panel=EXISTING,
    ),
]
TempoTenant = Annotated[
    str,
    typer.Option(
        "--tempo-tenant",
        help="Tempo tenant (multi-tenancy): sent as the X-Scope-OrgID header.",
        rich_help_panel=EXISTING,
    ),
]
BackendCa = Annotated[
    str,
    typer.Option(
        "--backend-ca",
        help="CA bundle (PEM) to verify the backend's TLS certificate.",
        rich_help_panel=EXISTING,
    ),
]
BackendInsecure = Annotated[
    bool,
    typer.Option(
        "--backend-insecure", help="Do not verify the backend's TLS certificate.", rich_help_panel=EXISTING
    ),
]
BackendConcurrency = Annotated[
    int | None,
    typer.Option(
        "--backend-concurrency",
        help="Parallel queries to the backend at first (default 4); the limit then adapts: "
        "+1 while answers stay fast, halved on 429/503, 5xx, timeouts or slow answers.",
        min=1,
        rich_help_panel=EXISTING,
    ),
]
BackendMaxConcurrency = Annotated[
    int | None,
    typer.Option(
        "--backend-max-concurrency",
        help="Highest parallel queries the adaptive limit may reach "
        "(default 32 for one id per query, 8 for batched queries).",
        min=1,
        rich_help_panel=EXISTING,
    ),
]
BackendFixedConcurrency = Annotated[
    bool,
    typer.Option(
        "--backend-fixed-concurrency",
        help="Keep --backend-concurrency queries in flight, whatever the backend answers.",
        rich_help_panel=EXISTING,
    ),
]
SearchService = Annotated[
    str,
    typer.Option(
        "--search-service",
        help="Service for the run-tag search (Jaeger needs one, e.g. istio-ingressgateway.istio-system).",
        rich_help_panel=EXISTING,
    ),
]
ExpectFrom = Annotated[
    list[Path] | None,
    typer.Option(
        "--expect-from",
        help="Istio YAML (Telemetry, IstioOperator, mesh ConfigMap, proxy.istio.io/config annotations) "
        "to read the expected sampling from, with Istio's precedence (for the ingress gateway).",
        rich_help_panel=EXISTING,
        exists=True,
        dir_okay=False,
    ),
]
ExpectedSpans = Annotated[
    int | None,
    typer.Option(
        "--expected-spans",
        help="Spans a complete sampled trace has; overrides the probed shape (a warning when they disagree).",
        rich_help_panel=MESH_PROFILE,
        min=1,
    ),
]
ReferenceChildren = Annotated[
    int,
    typer.Option(
        "--reference-children",
        help="Child spans per reference trace.",
        min=0,
        rich_help_panel="Reference spans",
    ),
]
Quiet = Annotated[
    float | None,
    typer.Option(
        "--quiet",
        help="Read-back stops when no trace completed for this many seconds "
        "(default: the probed time to queryable + 1 s; else Envoy's flush interval + 1 s).",
        min=0,
        rich_help_panel=READ_BACK,
    ),
]
MaxWait = Annotated[
    float,
    typer.Option(
        "--max-wait",
        help="Give up polling for late traces after this many seconds.",
        min=0,
        rich_help_panel=READ_BACK,
    ),
]
MinCollection = Annotated[
    float,
    typer.Option(
        "--min-collection",
        help="Collection rate below this fails the run.",
        min=0,
        max=1,
        rich_help_panel="Verdicts",
    ),
]
MaxErrorRate = Annotated[
    float,
    typer.Option(
        "--max-error-rate",
        help="A share of failed requests above this (a fraction: 0.05 = 5 %) fails the run's "
        "load_delivered verdict; a run that made no request fails it whatever the value.",
        min=0,
        max=1,
        rich_help_panel="Verdicts",
    ),
]
Processes = Annotated[
    int,
    typer.Option(
        "--processes",
        help="Locust worker processes on this machine (the master writes one ledger).",
        min=1,
        rich_help_panel=DISTRIBUTED,
    ),
]
Master = Annotated[
    bool,
    typer.Option(
        "--master",
        help="Be the master for `loadgen worker`s on other machines/pods (needs --expect-workers).",
        rich_help_panel=DISTRIBUTED,
    ),
]
ExpectWorkers = Annotated[
    int,
    typer.Option(
        "--expect-workers",
        help="With --master: wait for this many workers.",
        min=0,
        rich_help_panel=DISTRIBUTED,
    ),
]
MasterBindPort = Annotated[
    int,
    typer.Option(
        "--master-bind-port",
        help="With --master: port workers connect to.",
        min=1,
        max=65535,
        rich_help_panel=DISTRIBUTED,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print summary.json instead of tables.")]
Web = Annotated[
    bool,
    typer.Option(
        "--web",
        help="Locust's web UI drives the load instead of --duration: start and stop the test there; "
        "the stop reads the traces back and writes the report, which the UI's Tracing tab links "
        "with the collection numbers. The UI stays up until Ctrl-C.",
        rich_help_panel=WEB_UI,
    ),
]
WebHost = Annotated[
    str, typer.Option("--web-host", help="With --web: address the UI binds.", rich_help_panel=WEB_UI)
]
WebPort = Annotated[
    int,
    typer.Option(
        "--web-port",
        help="With --web: the UI's port (0: a free one).",
        min=0,
        max=65535,
        rich_help_panel=WEB_UI,
    ),
]


@dataclass(frozen=True)
class LoadFlags:
    """The load: how long, how many users, how fast, which header modes, which path."""

    duration: Duration = 10.0
    users: UsersOpt = 10
    spawn_rate: SpawnRate = 10.0
    rate: RateOpt = 500.0
    mix: MixOpt = DEFAULT_MIX_TEXT
    scenario: Scenario = ""
    path: RequestPath = "/headers"
    fanout: Fanout = True
    id_style: IdStyle = "random"
    xrid_sampled_fraction: XridFraction = None
    headless: Headless = False  # Locust's habit: accepted, a no-op
    csv: CsvPrefix = ""
    web: Web = False
    web_host: WebHost = "127.0.0.1"
    web_port: WebPort = 8089


@dataclass(frozen=True)
class TargetFlags:
    """An existing mesh: where the load goes, where reference spans go, where traces are read."""

    gateway: GatewayOpt = ""
    host: HostOpt = DEFAULT_HOST
    collector: CollectorOpt = ""
    backend: Backend = ""
    backend_header: BackendHeader = None
    tempo_tenant: TempoTenant = ""
    backend_ca: BackendCa = ""
    backend_insecure: BackendInsecure = False
    backend_concurrency: BackendConcurrency = None
    backend_max_concurrency: BackendMaxConcurrency = None
    backend_fixed_concurrency: BackendFixedConcurrency = False
    search_service: SearchService = ""

    def backend_flags(self) -> dict[str, object]:
        """BackendOptions fields from --backend-header/-ca/-insecure/-concurrency/-max-concurrency/
        -fixed-concurrency, --tempo-tenant."""
        parsed: dict[str, str] = {}
        for item in self.backend_header or ():
            name, sep, value = item.partition(":")
            if not sep or not name.strip():
                fatal(f"--backend-header must look like 'Name: value', got {item!r}")
            parsed[name.strip()] = value.strip()
        if self.tempo_tenant:
            if any(name.lower() == "x-scope-orgid" for name in parsed):
                fatal("give the Tempo tenant once: --tempo-tenant or --backend-header 'X-Scope-OrgID: ...'")
            parsed["X-Scope-OrgID"] = self.tempo_tenant
        if self.backend_ca and self.backend_insecure:
            fatal("give either --backend-ca or --backend-insecure, not both")
        verify: bool | str | None = self.backend_ca or (False if self.backend_insecure else None)
        return {
            "headers": parsed or None,
            "verify": verify,
            "concurrency": self.backend_concurrency,
            **self._concurrency_flags(),
        }

    def _concurrency_flags(self) -> dict[str, object]:
        maximum = self.backend_max_concurrency
        if maximum is not None and self.backend_fixed_concurrency:
            fatal("give either --backend-max-concurrency or --backend-fixed-concurrency, not both")
        start = self.backend_concurrency or BackendOptions().concurrency
        if maximum is not None and maximum < start:
            fatal(f"--backend-max-concurrency ({maximum}) is below --backend-concurrency ({start})")
        return {"max_concurrency": maximum, "adaptive": False if self.backend_fixed_concurrency else None}


@dataclass(frozen=True)
class ExpectationFlags:
    """What the run expects of the mesh, and how it learns the rest."""

    expect: ExpectOpt = None
    expect_from: ExpectFrom = None
    expected_spans: ExpectedSpans = None
    probe: ProbeOpt = True
    profile: ProfileOpt = None


@dataclass(frozen=True)
class ReadBackFlags:
    """Reference spans sent beside the load, how long the read-back waits for traces, and the
    collection and error rates that fail the run."""

    reference_rate: ReferenceRateOpt = 50.0
    reference_children: ReferenceChildren = 2
    reference_protocol: ReferenceProtocolOpt = None  # not given: zipkin, or OTEL_EXPORTER_OTLP_PROTOCOL
    reference_grpc_endpoint: ReferenceGrpcEndpointOpt = ""
    quiet: Quiet = None
    max_wait: MaxWait = 60.0
    min_collection: MinCollection = 0.99
    max_error_rate: MaxErrorRate = DEFAULT_MAX_ERROR_RATE
    keep_spans: KeepSpans = False
    readback_sample: ReadbackSampleOpt = None
    readback_fraction: ReadbackFractionOpt = None


@dataclass(frozen=True)
class DistributedFlags:
    """Locust workers: processes on this machine, or `loadgen worker`s elsewhere."""

    processes: Processes = 1
    master: Master = False
    expect_workers: ExpectWorkers = 0
    master_bind_port: MasterBindPort = 5557


@option_groups
def run(
    *,
    load: LoadFlags,
    run_id: RunIdOpt = "",
    output: OutputOpt = Path("reports"),
    seed: SeedOpt = None,
    tracing: TracingFlags,
    gw: GatewayFlags,
    mesh: MeshFlags,
    faults: FaultFlags,
    target: TargetFlags,
    expectation: ExpectationFlags,
    read_back: ReadBackFlags,
    distributed: DistributedFlags,
    as_json: AsJson = False,
    config: ConfigOpt = None,
) -> None:
    """Run a load test and report collection rate and sampling fidelity.

    Without --gateway it starts the embedded mesh (real Envoy gateway + sidecar, echo upstream,
    Zipkin-compatible collector) on 127.0.0.1. Writes reports/<run-id>/ (summary.json, report.md,
    report.html, ledger.jsonl, reference.jsonl; fetched.jsonl with --keep-spans). Options also come
    from LOADGEN_<FLAG> variables and loadgen.toml [run] (--config).

    Exit codes: the table at the end of `loadgen --help` (1 a verdict failed, 3 inconclusive,
    4 a component failed, 130 interrupted: those last two write a partial report).
    """
    _check_flags(load, mesh, target, distributed)
    if read_back.readback_sample is not None and read_back.readback_fraction is not None:
        fatal("give either --readback-sample or --readback-fraction, not both")
    opts = _run_options(
        RunOptions(run_id=run_id, output_dir=output, seed=seed),
        load, tracing, gw, mesh, faults, target, expectation, read_back, distributed,
    )  # fmt: skip
    crash_folder(opts.output_dir / opts.resolved_run_id())
    if opts.web:
        err.print(f"web UI: {web_url(opts.web_host, opts.web_port)} (once the mesh is ready)", markup=False)
    try:
        result = with_status("starting", lambda status: execute_run(opts, status))
    except (RunError, StackError) as exc:
        fatal(str(exc))
    _show(result, as_json)
    if result.web is not None:
        err.print(
            f"web UI still at {result.web.url} (Tracing tab: the report); Ctrl-C closes it", markup=False
        )
        result.web.wait_closed()
    raise typer.Exit(result.exit_code)


def _check_flags(
    load: LoadFlags, mesh: MeshFlags, target: TargetFlags, distributed: DistributedFlags
) -> None:
    """The checks that take more than one option, before anything starts."""
    check_mix(load.mix)
    if load.id_style not in ("random", "k6"):
        fatal(f"--id-style must be random or k6, got {load.id_style!r}")
    if not mesh.sidecar and not target.gateway and load.fanout and load.path.split("?", 1)[0] in FANOUT_PATHS:
        fatal(f"--path {load.path} needs the sidecar (the app calls out through it); drop --no-sidecar")
    if distributed.master and not distributed.expect_workers:
        fatal("--master needs --expect-workers N (how many `loadgen worker`s to wait for)")
    if distributed.master and distributed.processes > 1:
        fatal("give either --processes (workers on this machine) or --master (workers elsewhere), not both")
    if load.web and (distributed.master or distributed.processes > 1):
        fatal("--web runs one Locust process: drop --processes/--master")
    if load.web and load.headless:
        fatal("give either --web (Locust's web UI drives the load) or --headless, not both")


def _run_options(
    base: RunOptions,
    load: LoadFlags,
    tracing: TracingFlags,
    gw: GatewayFlags,
    mesh: MeshFlags,
    faults: FaultFlags,
    target: TargetFlags,
    expectation: ExpectationFlags,
    read_back: ReadBackFlags,
    distributed: DistributedFlags,
) -> RunOptions:
    """`base` (run id, output folder, seed) with every option group's values."""
    ref = reference_flags(
        read_back.reference_protocol,
        target.collector,
        read_back.reference_grpc_endpoint,
        gateway=target.gateway,
    )
    return replace(
        base,
        duration_s=load.duration,
        users=load.users,
        spawn_rate=load.spawn_rate,
        rate=load.rate,
        mix=load.mix,
        scenario=load.scenario,
        path=load.path,
        fanout=load.fanout,
        id_style=load.id_style,
        xrid_sampled_fraction=load.xrid_sampled_fraction,
        csv_prefix=str(Path(load.csv).absolute()) if load.csv else "",
        web=load.web,
        web_host=load.web_host,
        web_port=load.web_port or free_port(),
        expect_percent=expected_percent(expectation.expect, expectation.expect_from),
        tracing=tracing_config(tracing, gw, mesh),
        tracer=mesh.tracer,
        faults=collector_faults(faults),
        upstream=upstream_faults(faults, base.seed),
        gateway=target.gateway,
        host=target.host,
        collector=ref.collector,
        backend=target.backend,
        backend_flags=target.backend_flags(),
        search_service=target.search_service or None,
        expected_spans=expectation.expected_spans,
        probe=expectation.probe,
        profile_path=expectation.profile,
        reference_rate=read_back.reference_rate,
        reference_children=read_back.reference_children,
        reference_protocol=ref.protocol.value,
        reference_grpc_endpoint=ref.grpc_endpoint,
        reference_service=ref.service_name or base.reference_service,
        reference_headers=ref.headers,
        quiet_s=read_back.quiet,
        max_wait_s=read_back.max_wait,
        min_collection=read_back.min_collection,
        max_error_rate=read_back.max_error_rate,
        keep_spans=read_back.keep_spans,
        readback_sample=read_back.readback_sample,
        readback_fraction=read_back.readback_fraction,
        processes=distributed.processes,
        expect_workers=distributed.expect_workers if distributed.master else 0,
        master_bind_port=distributed.master_bind_port,
    )


def _show(result: RunResult, as_json: bool) -> None:
    """The run's summary as tables (or JSON), its notes, where the reports are, exit 4's cause, and
    the outcome line (PASS / FAIL / INCONCLUSIVE and the report; on stderr under --json)."""
    if as_json:
        out.print_json(json.dumps(result.summary))
    else:
        if result.summary.get("profile"):
            out.print(profile_table(result.summary["profile"]))
        for table in render_terminal(result.summary):
            out.print(table)
        for line in result.summary.get("notes", []):
            note(line)
        out.print(
            f"report: {result.run_dir / 'report.html'} ({result.run_dir / 'report.md'})  "
            f"summary: {result.run_dir / 'summary.json'}",
            markup=False,
        )
    print_component_failure(result.summary)
    print_outcome(result.exit_code, result.run_dir / "report.html", stderr=as_json)
