"""`loadgen calibrate`: the gateway's effective sampling rate, measured to a planned precision."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loadgen.calibrate import CalibrateOptions, CalibrationError
from loadgen.calibrate import calibrate as run_calibration
from loadgen.cli.console import fatal, out, print_outcome, with_status
from loadgen.cli.groups import GatewayFlags, MeshFlags, TracingFlags, option_groups, tracing_config
from loadgen.cli.inputs import expected_percent
from loadgen.cli.options import (
    DEFAULT_HOST,
    BackendOpt,
    GatewayOpt,
    HostOpt,
    OutputOpt,
    PreserveOpt,
    ProbeOpt,
    ProfileOpt,
    RateOpt,
    SeedOpt,
    UsersOpt,
)
from loadgen.report.terminal_md import markdown_renderables
from loadgen.run import RunError
from loadgen.stack.procs import StackError

Expect = Annotated[
    float | None, typer.Option("--expect", help="The configured sampling percent to check.", min=0, max=100)
]
ExpectFrom = Annotated[
    list[Path] | None,
    typer.Option(
        "--expect-from", help="Istio YAML to read the configured sampling from.", exists=True, dir_okay=False
    ),
]
Precision = Annotated[
    float | None,
    typer.Option("--precision", help="Wanted ± in percentage points (default: 10 % of the rarer outcome)."),
]
Confidence = Annotated[float, typer.Option("--confidence", help="Confidence level.")]
MaxRequests = Annotated[
    int, typer.Option("--max-requests", help="Cap on decision-free requests (0 = the plan).", min=0)
]
Looks = Annotated[int, typer.Option("--looks", help="Planned looks for early stopping.", min=1)]
Sequential = Annotated[
    bool, typer.Option("--sequential/--no-sequential", help="Stop early at planned looks (alpha spending).")
]
StatisticsOnly = Annotated[
    bool,
    typer.Option("--statistics-only", help="Ignore the exact x-request-id prediction; decide by statistics."),
]
CraftedIds = Annotated[
    bool, typer.Option("--crafted-ids", help="Send crafted x-request-ids (needs a gateway that keeps them).")
]
Sampling = Annotated[
    float | None,
    typer.Option("--sampling", help="Embedded mesh: the gateway's real sampling (default: --expect)."),
]
CalibrationId = Annotated[str, typer.Option("--calibration-id", help="Folder name (default: generated).")]


@option_groups
def calibrate(
    *,
    expect: Expect = None,
    expect_from: ExpectFrom = None,
    precision: Precision = None,
    confidence: Confidence = 0.95,
    max_requests: MaxRequests = 0,
    looks: Looks = 10,
    sequential: Sequential = True,
    statistics_only: StatisticsOnly = False,
    crafted_ids: CraftedIds = False,
    sampling: Sampling = None,
    preserve_request_id: PreserveOpt = False,
    mesh: MeshFlags,
    users: UsersOpt = 10,
    rate: RateOpt = 0.0,
    gateway: GatewayOpt = "",
    host: HostOpt = DEFAULT_HOST,
    backend: BackendOpt = "",
    calibration_id: CalibrationId = "",
    probe: ProbeOpt = True,
    profile: ProfileOpt = None,
    output: OutputOpt = Path("reports"),
    seed: SeedOpt = None,
) -> None:
    """Measure the gateway's effective sampling rate to a planned precision with decision-free
    requests; stop early when Envoy's x-request-id rule or the sequential test settles it.
    Writes calibration.json/.md. Exit 0 pass, 1 fail, 3 inconclusive, 2 error, 130 interrupted."""
    expect = expected_percent(expect, expect_from)
    if expect is None:
        fatal("give --expect PERCENT (the sampling you configured) or --expect-from FILE")
    tracing = None
    if not gateway:  # the embedded mesh, Istio-like, sampling at --sampling (default: --expect)
        real = TracingFlags(sampling=expect if sampling is None else sampling)
        tracing = tracing_config(real, GatewayFlags(preserve_request_id=preserve_request_id), mesh)
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
        tracer=mesh.tracer,
        probe=probe,
        profile_path=profile,
    )
    try:
        result = with_status("calibrating", lambda status: run_calibration(opts, status))
    except (CalibrationError, RunError, StackError, ValueError) as exc:
        fatal(str(exc))
    for block in markdown_renderables((result.cal_dir / "calibration.md").read_text()):
        out.print(block)
    print_outcome(result.exit_code, result.cal_dir / "calibration.md", f"verdict {result.verdict}")
    raise typer.Exit(result.exit_code)
