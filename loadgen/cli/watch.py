"""`loadgen watch`: the always-on tracing canary, with Prometheus metrics (docs/watch.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from loadgen.cli.console import err, error_line, fatal, out, with_status
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
    DEFAULT_MIX_TEXT,
    ConfigOpt,
    MixOpt,
    OutputOpt,
    ReferenceGrpcEndpointOpt,
    ReferenceProtocolOpt,
    ReferenceRateOpt,
    RunIdOpt,
    SeedOpt,
    duration_at_least,
)
from loadgen.cli.run import ExpectationFlags, RequestPath, TargetFlags
from loadgen.emitter import ReferenceProtocol
from loadgen.exitcodes import EXIT_COMPONENT_FAILED
from loadgen.run import RunError, RunOptions
from loadgen.stack.procs import StackError
from loadgen.watch.model import Source, WatchSnapshot
from loadgen.watch.options import DEFAULT_WINDOWS, GIVE_UP_FACTOR, WatchError, WatchOptions
from loadgen.watch.runner import WatchResult, run_watch
from loadgen.watch.traffic import locust_users

WATCH = "Watch"

Duration = Annotated[
    float,
    typer.Option(
        "--duration", "-d", "-t", help="Stop after this long (seconds, or 30s, 5m, 1h); 0: run until stopped.",
        parser=duration_at_least(0), metavar="DURATION", rich_help_panel=WATCH,
    ),
]  # fmt: skip
Window = Annotated[
    str,
    typer.Option(
        "--window",
        help="Rolling windows of the decision rate and collection ratios, e.g. 5m,1h or 10s,30s "
        '(each is a `window` label in seconds: window="300s").',
        rich_help_panel=WATCH,
    ),
]
Deadline = Annotated[
    float | None,
    typer.Option(
        "--deadline",
        help="When a request's trace should be queryable: one decided not sampled is read then "
        "(sampled ones and reference traces from 0.25 s on). Default: the probed time to "
        "queryable + 1 s; else Envoy's flush interval + 1 s.",
        parser=duration_at_least(0), metavar="DURATION", rich_help_panel=WATCH,
    ),
]  # fmt: skip
GiveUp = Annotated[
    float | None,
    typer.Option(
        "--give-up",
        help=f"Retry a trace not found complete until this long after it was sent, then conclude "
        f"(default {GIVE_UP_FACTOR:g} x the deadline). A backend error is never missing: unknown.",
        parser=duration_at_least(0), metavar="DURATION", rich_help_panel=WATCH,
    ),
]  # fmt: skip
Retention = Annotated[
    float,
    typer.Option(
        "--retention",
        help="Keep ledger segments this long after they were written (for inspection only).",
        parser=duration_at_least(1), metavar="DURATION", rich_help_panel=WATCH,
    ),
]  # fmt: skip
Segment = Annotated[
    float,
    typer.Option(
        "--segment",
        help="Locust writes the ledger in segments of this long; a request is counted once its "
        "segment is closed.",
        parser=duration_at_least(0.1), metavar="DURATION", rich_help_panel=WATCH,
    ),
]  # fmt: skip
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state",
        help="State folder: run id, pending checks, counters, windows, segments (default "
        "<--output>/watch-state). A restart on it carries on, counting nothing twice.",
        file_okay=False, rich_help_panel=WATCH,
    ),
]  # fmt: skip
MetricsPort = Annotated[
    int,
    typer.Option(
        "--metrics-port", help="Port of /metrics, /healthz and the status page (0: a free one, printed).",
        min=0, max=65535, rich_help_panel=WATCH,
    ),
]  # fmt: skip
WatchRate = Annotated[
    float, typer.Option("--rate", help="Requests/s through the mesh, over all users (above 0).", min=0)
]
MetricsHost = Annotated[
    str,
    typer.Option(
        "--metrics-host", help="Address the metrics endpoint binds (0.0.0.0 in a pod).", rich_help_panel=WATCH
    ),
]


@dataclass(frozen=True)
class WatchFlags:
    """How long, which windows, when a trace is read back and concluded, where the state is."""

    duration: Duration = 0.0
    window: Window = DEFAULT_WINDOWS
    deadline: Deadline = None
    give_up: GiveUp = None
    retention: Retention = 3600.0
    segment: Segment = 2.0
    state: StateDir = None
    metrics_port: MetricsPort = 9464
    metrics_host: MetricsHost = "127.0.0.1"


def _run_options(
    run_id: str, output: Path, seed: int | None, mix: str, path: str, rate: float, reference_rate: float,
    reference_protocol: ReferenceProtocol | None, reference_grpc_endpoint: str, tracing: TracingFlags, gw: GatewayFlags,
    mesh: MeshFlags, faults: FaultFlags, target: TargetFlags, expectation: ExpectationFlags,
) -> RunOptions:  # fmt: skip
    """The `run` options the shared pieces read (target, embedded mesh, profile, Locust's env)."""
    ref = reference_flags(
        reference_protocol, target.collector, reference_grpc_endpoint, gateway=target.gateway
    )
    return RunOptions(
        run_id=run_id,
        output_dir=output,
        seed=seed,
        users=locust_users(rate),
        rate=rate,
        mix=mix,
        path=path,
        expect_percent=expected_percent(expectation.expect, expectation.expect_from),
        tracing=tracing_config(tracing, gw, mesh),
        tracer=mesh.tracer,
        faults=collector_faults(faults),
        upstream=upstream_faults(faults, seed),
        gateway=target.gateway,
        host=target.host,
        collector=ref.collector,
        backend=target.backend,
        backend_flags=target.backend_flags(),
        search_service=target.search_service or None,
        expected_spans=expectation.expected_spans,
        probe=expectation.probe,
        profile_path=expectation.profile,
        reference_rate=reference_rate,
        reference_protocol=ref.protocol.value,
        reference_grpc_endpoint=ref.grpc_endpoint,
        reference_service=ref.service_name or RunOptions.reference_service,
        reference_headers=ref.headers,
    )


@option_groups
def watch(
    *,
    flags: WatchFlags,
    mix: MixOpt = DEFAULT_MIX_TEXT,
    path: RequestPath = "/headers",
    rate: WatchRate = 2.0,
    reference_rate: ReferenceRateOpt = 1.0,
    reference_protocol: ReferenceProtocolOpt = None,
    reference_grpc_endpoint: ReferenceGrpcEndpointOpt = "",
    run_id: RunIdOpt = "",
    output: OutputOpt = Path("reports"),
    seed: SeedOpt = None,
    tracing: TracingFlags,
    gw: GatewayFlags,
    mesh: MeshFlags,
    faults: FaultFlags,
    target: TargetFlags,
    expectation: ExpectationFlags,
    config: ConfigOpt = None,
) -> None:
    """Watch tracing all the time: a low steady rate of requests through the mesh (--rate over the
    header mix) and reference traces straight to the collector, each read back once its deadline
    has passed, counted found, partial, missing, leaked or unknown; the decision rate and
    collection over rolling windows with Wilson intervals, served as Prometheus metrics
    (/metrics), /healthz and a status page (/).

    Without --gateway it starts the embedded mesh. Restarting on the same --state carries on
    (same run id, counters continue). Options also come from LOADGEN_<FLAG> and loadgen.toml
    [watch]. Runs until --duration, SIGTERM or Ctrl-C (exit 0); exit 2 on a bad option or an
    unreachable target, 4 when a component of the embedded mesh dies.
    """
    check_mix(mix)
    if rate <= 0:
        fatal("--rate must be above 0 for watch (requests/s over all users)")
    run_opts = _run_options(
        run_id, output, seed, mix, path, rate, reference_rate, reference_protocol,
        reference_grpc_endpoint, tracing, gw, mesh, faults, target, expectation,
    )  # fmt: skip
    try:
        opts = WatchOptions.from_flags(
            flags.state or output / "watch-state", flags.window, deadline_s=flags.deadline,
            give_up_s=flags.give_up, retention_s=flags.retention, segment_s=flags.segment,
            reference_rate=reference_rate, duration_s=flags.duration, metrics_host=flags.metrics_host,
            metrics_port=flags.metrics_port,
        )  # fmt: skip
        result = with_status(
            "starting",
            lambda status: run_watch(opts, run_opts, status, lambda line: err.print(line, markup=False)),
        )
    except (WatchError, RunError, StackError) as exc:
        fatal(str(exc))
    _show(result)
    if result.failure:
        err.print(f"[bold red]error:[/] {error_line(result.failure)}")
        raise typer.Exit(EXIT_COMPONENT_FAILED)
    raise typer.Exit(0)


def _ratio(k: int, n: int, lower: float | None, upper: float | None) -> str:
    if not n or lower is None or upper is None:
        return "no data"
    return f"{k / n:.4f} [{lower:.4f}, {upper:.4f}] ({k}/{n})"


def window_lines(snapshot: WatchSnapshot) -> list[str]:
    """The last windows' figures, one line each: decision rate and collection per source."""
    lines = []
    for w in snapshot.windows:
        d = w.decision
        parts = [f"decision rate {_ratio(d.k, d.n, d.lower, d.upper)}"]
        if snapshot.configured_ratio is not None:
            parts[0] += f" (configured {snapshot.configured_ratio:.4f})"
        for source in Source:
            c = w.collection[source].collection
            parts.append(f"{source.value} collection {_ratio(c.k, c.n, c.lower, c.upper)}")
        lines.append(f"window {w.label}: " + "; ".join(parts))
    return lines


def _show(result: WatchResult) -> None:
    snapshot = result.snapshot
    out.print(
        f"watch {result.run_id} stopped ({result.stopped_by}); state: {result.state_dir}",
        markup=False,
        soft_wrap=True,
    )
    if snapshot is None:
        return
    totals: dict[str, int] = {}
    for (_source, _mode, outcome), n in snapshot.traces.items():
        totals[outcome] = totals.get(outcome, 0) + n
    shown = ", ".join(f"{o} {n}" for o, n in sorted(totals.items())) or "none concluded"
    out.print(
        f"requests {sum(snapshot.requests.values())}; traces {shown}; "
        f"pending {sum(snapshot.pending.values())}",
        markup=False,
        soft_wrap=True,
    )
    for line in window_lines(snapshot):
        out.print(line, markup=False, soft_wrap=True)  # one line each, whatever the width
    for note in result.notes:
        err.print(f"[yellow]note:[/] {error_line(note)}")
