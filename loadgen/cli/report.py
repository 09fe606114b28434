"""`loadgen report`: a run folder's reports rendered again, optionally against a baseline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from loadgen.cli.console import fatal, note, out
from loadgen.cli.crash import crash_folder
from loadgen.cli.inputs import summary_of
from loadgen.cli.options import RunDirArg
from loadgen.cli.verify import verify_or_rebuild
from loadgen.ledger import read_rows
from loadgen.report.compare import (
    answered_latencies,
    change_text,
    compare_summaries,
    render_comparison_markdown,
    value_text,
)
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
        help="Another run folder to compare with: comparison.md/.json and a section of report.html; "
        "each measure says whether it is different and by which rule.",
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
    cmp = _comparison(run_dir, summary, baseline) if baseline is not None else None
    written = render_run_folder(run_dir, window_s=window, comparison=cmp)
    for table in render_terminal(summary):
        out.print(table)
    if cmp is not None:
        written += _write_comparison(run_dir, cmp)
    for path in [run_dir / "report.md", *written]:
        out.print(f"wrote {path}", markup=False)
    if not (run_dir / "fetched.jsonl").exists():
        note(
            "no fetched.jsonl (the run was not given --keep-spans): report.html has no mesh "
            f"collection-over-time chart; `loadgen verify {run_dir}` reads the traces again and draws it"
        )


def _latencies(run_dir: Path) -> dict[str, list[float]] | None:
    """The answered requests' latencies per mode from the run's ledger (None without one)."""
    try:
        return answered_latencies(read_rows(run_dir / "ledger.jsonl"))
    except OSError:
        return None


def _comparison(run_dir: Path, summary: Summary, baseline: Path) -> dict[str, Any]:
    """The run against the baseline run; both ledgers' latencies, when there, test the p99s."""
    base_summary = summary_of(baseline)
    cur_lat, base_lat = _latencies(run_dir), _latencies(baseline)
    latencies = (cur_lat, base_lat) if cur_lat is not None and base_lat is not None else None
    return compare_summaries(summary, base_summary, latencies=latencies)


def _write_comparison(run_dir: Path, cmp: dict[str, Any]) -> list[Path]:
    """comparison.json/.md against the baseline run, its table and verdict changes shown."""
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
        cells = [
            row["measure"],
            *(value_text(row, k) for k in ("baseline", "current", "delta")),
            change_text(row),
        ]
        table.add_row(*map(escape, cells), style="bold" if row["change"] == "different" else None)
    return table
