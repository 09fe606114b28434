"""`loadgen report`: a run folder's reports rendered again, optionally against a baseline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from loadgen.cli.console import fatal, out
from loadgen.cli.crash import crash_folder
from loadgen.cli.inputs import summary_of
from loadgen.cli.options import RunDirArg
from loadgen.cli.verify import verify_or_rebuild
from loadgen.report.compare import compare_summaries, render_comparison_markdown
from loadgen.report.html import render_run_folder
from loadgen.report.render import render_markdown, render_terminal
from loadgen.summary.model import Summary

Window = Annotated[
    float,
    typer.Option("--window", help="Seconds per time window in report.html and timeseries.csv.", min=0.001),
]
Baseline = Annotated[
    Path | None,
    typer.Option(
        "--baseline",
        help="Another run folder to compare with (writes comparison.md/.json).",
        exists=True,
        file_okay=False,
    ),
]
Rebuild = Annotated[
    bool,
    typer.Option(
        "--rebuild",
        help="When summary.json is missing (a killed or crashed run), rebuild it first as "
        "`loadgen verify` does, from run.json, the ledger and the span store or backend.",
    ),
]


def report(
    run_dir: RunDirArg, window: Window = 1.0, baseline: Baseline = None, rebuild: Rebuild = False
) -> None:
    """Re-render report.md, report.html, modes.csv, timeseries.csv and the terminal tables from a
    run folder's summary.json; with --baseline, also show what changed against another run."""
    if not os.path.lexists(run_dir / "summary.json"):
        if not rebuild:
            fatal(
                f"{run_dir} has no summary.json (the run did not finish): `loadgen verify {run_dir}` "
                "or `loadgen report --rebuild` rebuilds it from run.json, the ledger and the span store"
            )
        crash_folder(run_dir)
        verify_or_rebuild(run_dir, "", 30.0)
    summary = summary_of(run_dir)
    (run_dir / "report.md").write_text(render_markdown(summary))
    written = render_run_folder(run_dir, window_s=window)
    for table in render_terminal(summary):
        out.print(table)
    if baseline is not None:
        written += _compare(run_dir, summary, baseline)
    for path in [run_dir / "report.md", *written]:
        out.print(f"wrote {path}", markup=False)


def _compare(run_dir: Path, summary: Summary, baseline: Path) -> list[Path]:
    """comparison.json/.md against the baseline run, its table and verdict changes shown."""
    cmp = compare_summaries(summary, summary_of(baseline))
    (run_dir / "comparison.json").write_text(json.dumps(cmp, indent=2) + "\n")
    (run_dir / "comparison.md").write_text(render_comparison_markdown(cmp))
    out.print(_comparison_table(cmp))
    for v in cmp["verdict_changes"]:
        out.print(f"verdict {v['verdict']}: {v['baseline']} -> {v['current']}", markup=False)
    return [run_dir / "comparison.md", run_dir / "comparison.json"]


def _comparison_table(cmp: dict[str, Any]) -> Table:
    table = Table(title=f"compared with baseline {escape(str(cmp['baseline']))}", title_justify="left")
    for col in ("measure", "baseline", "current", "delta", "change"):
        table.add_column(col)
    for row in cmp["rows"]:
        cells = [row["measure"], row["baseline"], row["current"], row["delta"], row["change"]]
        text = [escape("-" if c is None else f"{c:.4g}" if isinstance(c, float) else str(c)) for c in cells]
        table.add_row(*text, style="bold" if row["change"] in ("changed", "different") else None)
    return table
