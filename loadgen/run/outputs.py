"""The report files of a run folder, written from its summary."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from loadgen.analysis.reconcile import TraceObservation
from loadgen.report.html import render_run_folder
from loadgen.report.render import render_markdown
from loadgen.runfiles import write_json
from loadgen.summary.model import Summary


def write_report_files(
    run_dir: Path, summary: Summary, observations: Mapping[str, TraceObservation] | None = None
) -> None:
    """summary.json, report.md, and (report.html) report.html, modes.csv and timeseries.csv;
    `observations` (the read-back's) else fetched.jsonl feed the collection-over-time chart."""
    write_json(run_dir / "summary.json", summary.to_dict())
    (run_dir / "report.md").write_text(render_markdown(summary))
    render_run_folder(run_dir, observations=observations)
