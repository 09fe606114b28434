"""The I/O edge of the HTML report: read a run folder (summary.json, ledger.jsonl, fetched.jsonl,
steps.json), call the pure renderers, and write report.html, modes.csv and timeseries.csv."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadgen.analysis.reconcile import TraceObservation
from loadgen.ledger import read_ledger
from loadgen.mesh.tracer import TracerFamily
from loadgen.redact import redact_data
from loadgen.report.html.capacity import steps_of
from loadgen.report.html.page import render_html
from loadgen.report.tables import expectation_from_summary, ledger_timeseries, modes_csv, timeseries_csv
from loadgen.runfiles import load_fetched
from loadgen.runfolder import run_tracer


def _load_steps(run_dir: Path) -> tuple[list[Mapping[str, Any]] | None, int | None]:
    path = run_dir / "steps.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    return steps_of(data)


def render_run_folder(
    run_dir: Path,
    *,
    window_s: float = 1.0,
    comparison: Mapping[str, Any] | None = None,
    observations: Mapping[str, TraceObservation] | None = None,
) -> list[Path]:
    """Write report.html, modes.csv and timeseries.csv into a run folder (from its summary.json,
    ledger.jsonl and fetched.jsonl; capacity steps from summary["capacity"] or steps.json).
    `comparison` (against a baseline run) adds its section. `observations` (a read-back's, in
    memory) stand in for fetched.jsonl, which a run writes only with --keep-spans. Returns the written paths. Raises
    OSError/ValueError when summary.json is unreadable."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise ValueError(f"{run_dir / 'summary.json'} is not a JSON object")
    summary = redact_data(summary)  # report.html is shared: no credential from any URL it quotes
    fetched = run_dir / "fetched.jsonl"
    if observations is None and fetched.exists():
        observations = load_fetched(fetched)
    timeseries = ledger_timeseries(
        read_ledger(run_dir / "ledger.jsonl"),
        window_s,
        observations=observations,
        expect=expectation_from_summary(summary) if observations is not None else None,
        tracer=run_tracer(run_dir) or TracerFamily.ZIPKIN,  # where the run read each decision
    )
    steps, knee = _load_steps(run_dir)
    written: list[Path] = []
    for name, text in (
        ("report.html", render_html(summary, timeseries, steps=steps, knee=knee, comparison=comparison)),
        ("modes.csv", modes_csv(summary)),
        ("timeseries.csv", timeseries_csv(timeseries)),
    ):
        path = run_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
