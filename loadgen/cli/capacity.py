"""`loadgen capacity`: load stepped up until the mesh or its tracing stops keeping up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from loadgen.capacity import CapacityOptions, CapacityResult, KneeBounds, SafetyBounds, run_capacity
from loadgen.cli.console import (
    err,
    error_line,
    fatal,
    out,
    print_component_failure,
    print_outcome,
    with_status,
)
from loadgen.cli.groups import (
    FaultFlags,
    MeshFlags,
    TracingFlags,
    collector_faults,
    option_groups,
    tracing_config,
    upstream_faults,
)
from loadgen.cli.inputs import check_mix, reference_flags
from loadgen.cli.options import (
    DEFAULT_HOST,
    DEFAULT_MIX_TEXT,
    EMBEDDED,
    BackendOpt,
    CollectorOpt,
    ConfigOpt,
    ExpectOpt,
    GatewayOpt,
    HostOpt,
    MixOpt,
    OutputOpt,
    ProbeOpt,
    ProfileOpt,
    ReferenceGrpcEndpointOpt,
    ReferenceProtocolOpt,
    ReferenceRateOpt,
    RunIdOpt,
    SeedOpt,
    duration_at_least,
)
from loadgen.emitter import DEFAULT_SERVICE_NAME
from loadgen.report.render import capacity_table
from loadgen.run import RunError, RunOptions
from loadgen.stack.procs import StackError

KNEE = "Knee"
SAFETY = "Safety"

Steps = Annotated[
    str,
    typer.Option(
        "--steps",
        help="users:N,N,... (closed-loop users per step) or rate:R,R,... (target req/s per step; users fixed by --step-users).",
    ),
]
StepDuration = Annotated[
    float,
    typer.Option(
        "--step-duration", help="How long each step runs, ramp included: seconds, or 30s, 2m.",
        parser=duration_at_least(1), metavar="DURATION",
    ),
]  # fmt: skip
Ramp = Annotated[
    float,
    typer.Option(
        "--ramp", help="Time at each step's start spent reaching it (seconds, or 5s); left out of the numbers.",
        parser=duration_at_least(0), metavar="DURATION",
    ),
]  # fmt: skip
StepUsers = Annotated[int, typer.Option("--step-users", help="Rate steps: the fixed user count.", min=1)]
UserRate = Annotated[
    float, typer.Option("--user-rate", help="Users steps: req/s per user (0 = as fast as it goes).", min=0)
]
SloP99 = Annotated[
    float | None, typer.Option("--slo-p99-ms", help="Knee bound: p99 latency SLO.", rich_help_panel=KNEE)
]
MaxErrors = Annotated[
    float,
    typer.Option("--max-errors", help="Knee bound: error fraction.", min=0, max=1, rich_help_panel=KNEE),
]
MinCollection = Annotated[
    float,
    typer.Option(
        "--min-collection", help="Knee bound: mesh collection rate.", min=0, max=1, rich_help_panel=KNEE
    ),
]
MinThroughput = Annotated[
    float,
    typer.Option(
        "--min-throughput",
        help="Knee bound: achieved/target req/s (0 = off).",
        min=0,
        max=1,
        rich_help_panel=KNEE,
    ),
]
MinScaling = Annotated[
    float,
    typer.Option(
        "--min-scaling",
        help="Knee bound: achieved req/s must rise by at least this share of the offered increase "
        "from the step before (closed-loop users: the added users at the step before's req/s per "
        "user). 0 = off.",
        min=0,
        max=1,
        rich_help_panel=KNEE,
    ),
]
MaxP99Growth = Annotated[
    float,
    typer.Option(
        "--max-p99-growth",
        help="Knee bound: p99 at most this multiple of the first step's p99. 0 = off.",
        min=0,
        rich_help_panel=KNEE,
    ),
]
AbortErrors = Annotated[
    float,
    typer.Option(
        "--abort-errors",
        help="Safety: stop when live errors exceed this.",
        min=0,
        max=1,
        rich_help_panel=SAFETY,
    ),
]
AbortCollection = Annotated[
    float,
    typer.Option(
        "--abort-collection",
        help="Safety: stop when live collection falls below this.",
        min=0,
        max=1,
        rich_help_panel=SAFETY,
    ),
]
NoSafety = Annotated[bool, typer.Option("--no-safety", help="Never stop early.", rich_help_panel=SAFETY)]
IngestLimit = Annotated[
    float,
    typer.Option(
        "--collector-ingest-limit",
        help="Embedded mesh: the collector keeps at most this many spans/s; the excess is answered 202 and "
        "discarded (an overloaded collector). 0 = no limit.",
        min=0,
        rich_help_panel=EMBEDDED,
    ),
]


@dataclass(frozen=True)
class StepFlags:
    """The steps: users or target rates, how long each, and the ramp left out of the numbers."""

    steps: Steps = "users:5,10,20,40"
    step_duration: StepDuration = 20.0
    ramp: Ramp = 3.0
    step_users: StepUsers = 32
    user_rate: UserRate = 0.0


@dataclass(frozen=True)
class KneeFlags:
    """When a step counts as past the knee."""

    slo_p99_ms: SloP99 = None
    max_errors: MaxErrors = 0.01
    min_collection: MinCollection = 0.99
    min_throughput: MinThroughput = 0.9
    min_scaling: MinScaling = 0.5
    max_p99_growth: MaxP99Growth = 2.0

    def bounds(self) -> KneeBounds:
        return KneeBounds(
            p99_ms=self.slo_p99_ms,
            max_error_rate=self.max_errors,
            min_collection=self.min_collection,
            min_throughput=self.min_throughput or None,
            min_scaling=self.min_scaling or None,
            max_p99_growth=self.max_p99_growth or None,
        )


@dataclass(frozen=True)
class SafetyFlags:
    """When the run stops early."""

    abort_errors: AbortErrors = 0.5
    abort_collection: AbortCollection = 0.5
    no_safety: NoSafety = False

    def bounds(self) -> SafetyBounds:
        if self.no_safety:
            return SafetyBounds(max_error_rate=None, min_collection=None)
        return SafetyBounds(max_error_rate=self.abort_errors, min_collection=self.abort_collection)


@option_groups
def capacity(
    *,
    step: StepFlags,
    knee: KneeFlags,
    safety: SafetyFlags,
    tracing: TracingFlags,
    mesh: MeshFlags,
    ingest_limit: IngestLimit = 0.0,
    faults: FaultFlags,
    mix: MixOpt = DEFAULT_MIX_TEXT,
    gateway: GatewayOpt = "",
    host: HostOpt = DEFAULT_HOST,
    collector: CollectorOpt = "",
    backend: BackendOpt = "",
    expect: ExpectOpt = None,
    probe: ProbeOpt = True,
    profile: ProfileOpt = None,
    reference_rate: ReferenceRateOpt = 5.0,
    reference_protocol: ReferenceProtocolOpt = None,
    reference_grpc_endpoint: ReferenceGrpcEndpointOpt = "",
    run_id: RunIdOpt = "",
    output: OutputOpt = Path("reports"),
    seed: SeedOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Step the load up (users or target rate) until the mesh or tracing stops keeping up.

    Per step: throughput, p50/p95/p99, errors, decision rate, mesh/reference collection with 95 %
    intervals, collector ingest spans/s, and the knee (the first step breaking a bound). Writes
    capacity.json, capacity.md and steps.json next to the usual run files (report.html plots the
    steps). Exit codes: 0 steps ran (a knee is a finding), 1 a safety bound aborted the run,
    2 error, 4 a component failed, 130 interrupted."""
    check_mix(mix)
    if 0 < knee.max_p99_growth < 1:
        fatal(f"--max-p99-growth must be 0 (off) or at least 1, got {knee.max_p99_growth:g}")
    ref = reference_flags(reference_protocol, collector, reference_grpc_endpoint, gateway=gateway)
    run_opts = RunOptions(
        run_id=run_id,
        output_dir=output,
        mix=mix,
        seed=seed,
        tracing=tracing_config(tracing, mesh=mesh),
        tracer=mesh.tracer,
        faults=collector_faults(faults, ingest_limit),
        upstream=upstream_faults(faults, seed),
        gateway=gateway,
        host=host,
        collector=ref.collector,
        backend=backend,
        expect_percent=expect,
        reference_rate=reference_rate,
        reference_protocol=ref.protocol.value,
        reference_grpc_endpoint=ref.grpc_endpoint,
        reference_service=ref.service_name or DEFAULT_SERVICE_NAME,
        reference_headers=ref.headers,
        probe=probe,
        profile_path=profile,
    )
    opts = CapacityOptions(
        steps=step.steps,
        step_s=step.step_duration,
        ramp_s=step.ramp,
        step_users=step.step_users,
        user_rate=step.user_rate,
        bounds=knee.bounds(),
        safety=safety.bounds(),
        run=run_opts,
    )
    try:
        result = with_status("capacity run", lambda status: run_capacity(opts, status))
    except (RunError, StackError, ValueError) as exc:
        fatal(str(exc))
    _show(result)
    raise typer.Exit(result.exit_code)


def _show(result: CapacityResult) -> None:
    """The steps as a table (the knee in red), the knee's cause, an abort, and where the reports are."""
    out.print(capacity_table(result.rows(), str(result.run.summary["run_id"])))
    knee_doc = result.document.get("knee") or {}
    if knee_doc.get("detail"):
        out.print(str(knee_doc["detail"]), markup=False)
    if result.abort:
        err.print(f"[yellow]aborted:[/] {error_line(str(result.abort))}")
    out.print(
        f"capacity: {result.run.run_dir / 'capacity.md'}  report: {result.run.run_dir / 'report.html'}",
        markup=False,
    )
    print_component_failure(result.run.summary)
    knee_text = f"knee: {knee_doc.get('label', '?')}" if knee_doc else "no knee"
    print_outcome(result.exit_code, result.run.run_dir / "report.html", knee_text)
