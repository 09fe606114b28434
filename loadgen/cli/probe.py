"""`loadgen probe`: learn the mesh before measuring it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from loadgen.cli.console import err, fatal, out, with_status
from loadgen.cli.groups import GatewayFlags, TracingFlags, option_groups, tracing_config
from loadgen.cli.options import (
    DEFAULT_HOST,
    BackendOpt,
    ContextOpt,
    GatewayOpt,
    HostOpt,
    OutputOpt,
    SamplingOpt,
    SeedOpt,
    SpawnGwOpt,
    SpawnScOpt,
)
from loadgen.mesh.profile import profile_advice
from loadgen.report.profile_view import profile_table
from loadgen.run import RunError, RunOptions, probe_only
from loadgen.stack.envoy import TraceContextOption
from loadgen.stack.procs import StackError

RequestPath = Annotated[str, typer.Option("--path", help="Request path to probe (as `run --path`).")]
RunId = Annotated[str, typer.Option("--run-id", help="Folder name (default: generated).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")]


@option_groups
def probe(
    *,
    gateway: GatewayOpt = "",
    host: HostOpt = DEFAULT_HOST,
    backend: BackendOpt = "",
    path: RequestPath = "/headers",
    sampling: SamplingOpt = 100.0,
    spawn_gateway: SpawnGwOpt = True,
    spawn_sidecar: SpawnScOpt = False,
    context: ContextOpt = TraceContextOption.USE_B3,
    gw: GatewayFlags,
    run_id: RunId = "",
    output: OutputOpt = Path("reports"),
    seed: SeedOpt = None,
    as_json: AsJson = False,
) -> None:
    """Learn the mesh before measuring it: a few crafted requests (at most 24, about 30 s with the
    read-back) reveal the shape of a sampled trace, header echo, what the gateway does with client
    x-request-ids and forcing headers, B3/W3C continuation, the run-id tag and the time to
    queryable. Writes mesh-profile.json for `run --profile`, and prints what to change.
    Without --gateway it probes the embedded mesh. Exit 0 probed, 2 error, 130 interrupted."""
    tracing = TracingFlags(sampling, spawn_gateway, spawn_sidecar, 1000, context)
    opts = RunOptions(
        run_id=run_id,
        output_dir=output,
        path=path,
        seed=seed,
        tracing=tracing_config(tracing, gw),
        gateway=gateway,
        host=host,
        backend=backend,
    )
    try:
        profile, written = with_status("probing", lambda status: probe_only(opts, status))
    except (RunError, StackError) as exc:
        fatal(escape(str(exc)))
    if as_json:
        out.print_json(json.dumps(profile.to_dict()))
        raise typer.Exit(0)
    out.print(profile_table(profile.to_dict()))
    for note in profile.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    for advice in profile_advice(profile):
        out.print(f"[bold]change:[/] {escape(advice)}")
    out.print(
        f"profile: {escape(str(written))}  (reuse it with `loadgen run --profile {escape(str(written))}`)"
    )
