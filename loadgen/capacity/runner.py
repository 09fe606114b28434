"""`loadgen capacity`'s orchestration (the I/O of the package): one load run stepping through
the plan with the live monitor, then the per-step analysis of the run folder's files, written
as capacity.json, capacity.md and steps.json (and report.html again, with the steps)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loadgen.analysis.reconcile import Expectation
from loadgen.capacity.knee import Knee, find_knee
from loadgen.capacity.metrics import IngestSample, StepMetrics, step_metrics, step_windows
from loadgen.capacity.model import (
    CAPACITY_JSON,
    CAPACITY_MD,
    INGEST_LOG,
    STEPS_JSON,
    STEPS_LOG,
    CapacityOptions,
    KneeBounds,
    SafetyBounds,
)
from loadgen.capacity.monitor import LiveMonitor
from loadgen.capacity.render import capacity_document, capacity_rows, render_capacity_markdown, report_steps
from loadgen.emitter import read_reference_log, summarize_reference_log
from loadgen.exitcodes import EXIT_COMPONENT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_VERDICT_FAILED
from loadgen.ledger import read_ledger
from loadgen.redact import redact_data
from loadgen.report.html import render_run_folder
from loadgen.run import RunError, RunResult, Status, execute_run
from loadgen.runfiles import load_fetched, write_json
from loadgen.traffic.locustfile_paths import CAPACITY, locustfile_path
from loadgen.traffic.shape import StepPlan


@dataclass
class CapacityResult:
    run: RunResult
    document: dict[str, Any]  # capacity.json
    metrics: list[StepMetrics]
    knee: Knee | None
    abort: str | None
    exit_code: int

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def rows(self) -> list[list[str]]:
        return capacity_rows(self.document)


def capacity_scenario_path() -> str:
    """The locustfile of capacity runs (the traced user driven by the step shape): the packaged
    one, loaded by Locust with `-f`, which scenarios/capacity.py in a checkout links to."""
    return str(locustfile_path(CAPACITY))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return list(read_ledger(path))  # any JSONL of objects: bad lines (not UTF-8, torn) skipped


def _ledger_span(ledger: Path) -> tuple[float | None, float | None]:
    """(first, last) request start time in the ledger."""
    first_ts: float | None = None
    last_ts: float | None = None
    for rec in read_ledger(ledger):
        ts = rec.get("ts")
        if isinstance(ts, int | float):
            first_ts = ts if first_ts is None else min(first_ts, ts)
            last_ts = ts if last_ts is None else max(last_ts, ts)
    return first_ts, last_ts


def _reference_traces(run_dir: Path) -> list[tuple[float | None, str, str, int]]:
    """(start time, trace id, emitter state, expected spans) per reference trace."""
    ref_path = run_dir / "reference.jsonl"
    if not ref_path.exists():
        return []
    ref = summarize_reference_log(read_reference_log(ref_path))
    return [(o.t, tid, o.state, o.spans) for tid, o in ref.traces.items()]


def _ingest_log(run_dir: Path) -> list[IngestSample]:
    return [
        IngestSample(**{k: r[k] for k in ("t", "received", "accepted", "dropped")})
        for r in _read_jsonl(run_dir / INGEST_LOG)
    ]


def analyze_capacity(
    run_dir: Path,
    plan: StepPlan,
    bounds: KneeBounds,
    safety: SafetyBounds,
    *,
    status: str = "complete",
    abort: Mapping[str, Any] | None = None,
    ingest: Sequence[IngestSample] | None = None,
    notes: Sequence[str] = (),
    live_checks: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, Any], list[StepMetrics], Knee | None]:
    """Per-step metrics and the knee from a run folder's files; writes capacity.json,
    capacity.md and steps.json. Re-runnable on a finished run (ingest from ingest.jsonl)."""
    meta = json.loads((run_dir / "run.json").read_text())
    exp = meta.get("expectation") or {}
    expect = Expectation.from_run_json(exp)
    ledger = run_dir / "ledger.jsonl"
    first_ts, last_ts = _ledger_span(ledger)
    stop_at = abort.get("at") if abort else None
    windows = step_windows(
        plan,
        _read_jsonl(run_dir / STEPS_LOG),
        stop_at=float(stop_at) if isinstance(stop_at, int | float) else None,
        first_ts=first_ts,
        last_ts=last_ts,
    )
    metrics = step_metrics(
        read_ledger(ledger),
        load_fetched(run_dir / "fetched.jsonl"),
        windows,
        expect,
        reference=_reference_traces(run_dir),
        ingest=_ingest_log(run_dir) if ingest is None else ingest,
    )
    knee = find_knee(metrics, bounds)
    all_notes = list(notes)
    if not (run_dir / STEPS_LOG).exists():
        all_notes.append(
            "no step log from the shape: steps placed on the nominal schedule from the first request"
        )
    doc = capacity_document(
        run_id=str(meta.get("run_id", run_dir.name)),
        plan=plan,
        bounds=bounds,
        safety=safety,
        metrics=metrics,
        knee=knee,
        status=status,
        abort=abort,
        notes=all_notes,
        live_checks=live_checks,
    )
    write_json(run_dir / CAPACITY_JSON, doc)
    write_json(run_dir / STEPS_JSON, report_steps(doc))
    (run_dir / CAPACITY_MD).write_text(render_capacity_markdown(redact_data(doc)))
    render_run_folder(run_dir)  # report.html again, now with the steps and the knee
    return doc, metrics, knee


def reanalyze_capacity(run_dir: Path, bounds: KneeBounds | None = None) -> dict[str, Any]:
    """Recompute the steps and the knee of a finished capacity run from its folder (e.g. with
    other bounds, or after `loadgen verify` re-read late traces); rewrites capacity.json/.md and
    steps.json and returns the new capacity.json content."""
    try:
        previous = json.loads((run_dir / CAPACITY_JSON).read_text())
        p = previous["plan"]
        plan = StepPlan.parse(
            str(p["spec"]),
            step_s=float(p["step_s"]),
            ramp_s=float(p["ramp_s"]),
            users=int(p["users"]),
            user_rate=float(p["user_rate"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{run_dir} is not a capacity run folder ({CAPACITY_JSON}: {exc})") from exc
    doc, _, _ = analyze_capacity(
        run_dir,
        plan,
        bounds or KneeBounds(**previous.get("bounds", {})),
        SafetyBounds(**previous.get("safety", {})),
        status=str(previous.get("status", "complete")),
        abort=previous.get("abort"),
        notes=[n for n in previous.get("notes", []) if not n.startswith("no step log")],
        live_checks=previous.get("live_checks", []),
    )
    return doc


def run_capacity(opts: CapacityOptions, status: Status) -> CapacityResult:
    """One load run stepping through the plan, then the per-step analysis. Raises RunError for a
    bad plan or target (nothing started).

    Exit code: 0 the steps ran (a knee is a finding, not a failure), 1 a safety bound aborted
    the run, 130 interrupted; the steps that ran are analysed in every case."""
    try:
        plan = opts.plan()
    except ValueError as exc:
        raise RunError(f"capacity steps: {exc}") from exc
    base = opts.run
    if plan.paced and (base.processes > 1 or base.expect_workers):
        raise RunError(
            "rate steps and a per-user rate need one Locust process (the step shape paces the users in "
            "its own process): drop --processes/--master, or use closed-loop users steps"
        )
    run_id = base.resolved_run_id()
    run_dir = base.output_dir / run_id
    scenario = base.scenario or capacity_scenario_path()
    monitor = LiveMonitor(
        run_dir,
        opts.safety,
        backend_spec=base.backend if base.gateway else "",
        backend_flags=base.backend_flags,
        # The real URL, credentials included: run.json's is redacted, fit to show, not to use.
        stats_url=base.collector.rstrip("/") + "/loadgen/stats" if base.gateway and base.collector else None,
    )
    run_opts = replace(
        base,
        run_id=run_id,
        scenario=scenario,
        duration_s=plan.duration_s,
        users=plan.max_users,
        spawn_rate=plan.spawn_rate_for(0),
        rate=0.0,
        max_requests=0,
        extra_env={**base.extra_env, **plan.to_env(), "LOADGEN_STEPS_LOG": str(run_dir / STEPS_LOG)},
        on_tick=monitor,
    )
    labels = ", ".join(plan.label(i) for i in range(len(plan.targets)))
    status(f"capacity: {len(plan.targets)} steps of {plan.step_s:g} s ({labels})")
    try:
        result = execute_run(run_opts, status)
    finally:
        monitor.close()
    summary = result.summary
    abort = None
    if monitor.abort_reason:
        abort = {"reason": monitor.abort_reason, "at": monitor.abort_at, "elapsed_s": monitor.abort_elapsed_s}
    run_status = "aborted" if abort else ("partial" if summary.get("status") == "partial" else "complete")
    status("capacity: per-step metrics and the knee")
    doc, metrics, knee = analyze_capacity(
        run_dir,
        plan,
        opts.bounds,
        opts.safety,
        status=run_status,
        abort=abort,
        ingest=monitor.samples,
        notes=monitor.notes,
        live_checks=monitor.checks,
    )
    code = {"aborted": EXIT_VERDICT_FAILED, "partial": EXIT_INTERRUPTED}.get(run_status, EXIT_OK)
    if summary.get("component_failure"):
        code = EXIT_COMPONENT_FAILED  # a step's Locust, Envoy or disk failed: not the user's interrupt
    return CapacityResult(result, doc, metrics, knee, monitor.abort_reason, code)
