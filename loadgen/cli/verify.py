"""`loadgen verify`: an earlier run re-read from its backend and re-reconciled."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from loadgen.cli.console import err, fatal, out, print_outcome, with_status
from loadgen.cli.crash import crash_folder
from loadgen.cli.options import ReadbackFractionOpt, ReadbackSampleOpt, RunDirArg
from loadgen.report.render import render_terminal
from loadgen.run import RunError, RunResult, verify_run
from loadgen.runfolder import RunFolderError
from loadgen.stack.procs import StackError

Backend = Annotated[
    str,
    typer.Option(
        "--backend", help="Read from this backend instead of the run's (zipkin:URL, jaeger:URL, ...)."
    ),
]
MaxWait = Annotated[float, typer.Option("--max-wait", help="Seconds to keep polling for late traces.", min=0)]


def verify(
    run_dir: RunDirArg,
    backend: Backend = "",
    max_wait: MaxWait = 30.0,
    readback_sample: ReadbackSampleOpt = None,
    readback_fraction: ReadbackFractionOpt = None,
) -> None:
    """Re-query the backend for every trace of an earlier run (late spans, a backend that was down),
    re-reconcile and update summary.json/report.md (the run's own summary is kept as
    summary.previous.json, later ones as summary.previous.2.json, ...). A run that never wrote
    summary.json (killed, crashed, out of disk) gets one rebuilt from run.json, the ledger and the
    span store or backend, marked partial. An embedded run is re-read from the span store in its
    run folder. A sampled read-back queries the same sample again unless told otherwise."""
    if readback_sample is not None and readback_fraction is not None:
        fatal("give either --readback-sample or --readback-fraction, not both")
    crash_folder(run_dir)
    result, changes = verify_or_rebuild(run_dir, backend, max_wait, (readback_sample, readback_fraction))
    for table in render_terminal(result.summary):
        out.print(table)
    for name, before, after in changes:
        marker = "" if before == after else "  (changed)"
        out.print(f"{name}: {before} -> {after}{marker}", markup=False)
    print_outcome(result.exit_code, run_dir / "report.html")
    raise typer.Exit(result.exit_code)


def verify_or_rebuild(
    run_dir: Path,
    backend: str,
    max_wait: float,
    sample: tuple[int | None, float | None] = (None, None),
) -> tuple[RunResult, list[tuple[str, Any, Any]]]:
    """`verify_run` with a spinner and its errors as one line; says so when it rebuilt summary.json."""
    rebuilding = not os.path.lexists(run_dir / "summary.json")
    try:
        result, changes = with_status(
            "rebuilding summary.json" if rebuilding else "verifying",
            lambda status: verify_run(
                run_dir,
                status,
                backend_spec=backend,
                max_wait_s=max_wait,
                readback_sample=sample[0],
                readback_fraction=sample[1],
            ),  # fmt: skip
        )
    except (RunError, StackError, RunFolderError) as exc:
        fatal(str(exc))
    if rebuilding:
        unknown = ", ".join((result.summary.get("recovered") or {}).get("unknown") or ()) or "nothing"
        err.print(
            f"{run_dir / 'summary.json'} was missing (the run did not finish): rebuilt it from the run folder, "
            f"marked partial; only the live run knew {unknown} (null)",
            markup=False,
            highlight=False,
        )
    return result, changes
