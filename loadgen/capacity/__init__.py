"""`loadgen capacity`: step the load up until tracing (or the mesh) stops keeping up.

    plan (loadgen.traffic.shape.StepPlan) -> execute_run(scenario = traced user + step shape,
    on_tick = LiveMonitor: collector ingest stats + safety abort) -> per-step metrics (pure
    `step_metrics`) -> knee (pure `find_knee`) -> capacity.json, capacity.md, steps.json

Each step is measured over its window after the ramp, from what is on disk: the ledger (requests
by start time), fetched.jsonl (the read-back after the whole run), reference.jsonl (reference
traces by start time), the shape's step log (when each step really began) and the collector's
ingest counters sampled once a second (embedded collector only: `GET /loadgen/stats`).

**The knee** is the first step where a bound breaks: p99 latency above the SLO, errors above a
fraction, mesh collection below a fraction, (steps with a target rate) achieved throughput
below a fraction of the target, achieved req/s rising by less than a share of the offered
increase from the step before, or p99 above a multiple of the first step's. Bounds are checked
on point estimates; each rate is reported with its Wilson 95 % interval to judge them.

The package: `model` (options, bounds, file names), `metrics` (step windows and per-step
numbers, pure), `knee` (the first step past a bound, pure), `render` (capacity.json, steps.json
and capacity.md, pure), `monitor` (the live monitor: ingest samples and the safety abort) and
`runner` (the run and the analysis of its folder: the I/O).

This process never imports Locust (see loadgen.run); the shape module is imported for its pure
plan only.
"""

from loadgen.capacity.knee import Knee, breaches_by_step, find_knee, offered_increase, step_breaches
from loadgen.capacity.metrics import IngestSample, StepMetrics, StepWindow, step_metrics, step_windows
from loadgen.capacity.model import (
    CAPACITY_JSON,
    CAPACITY_MD,
    INGEST_LOG,
    REASONS,
    SCHEMA_VERSION,
    STEPS_JSON,
    STEPS_LOG,
    CapacityOptions,
    KneeBounds,
    SafetyBounds,
)
from loadgen.capacity.monitor import LiveMonitor
from loadgen.capacity.render import (
    CAPACITY_COLUMNS,
    capacity_document,
    capacity_rows,
    render_capacity_markdown,
    report_steps,
)
from loadgen.capacity.runner import (
    CapacityResult,
    analyze_capacity,
    capacity_scenario_path,
    reanalyze_capacity,
    run_capacity,
)
from loadgen.capacity.runner import _read_jsonl as _read_jsonl

__all__ = [
    "CAPACITY_COLUMNS",
    "CAPACITY_JSON",
    "CAPACITY_MD",
    "INGEST_LOG",
    "REASONS",
    "SCHEMA_VERSION",
    "STEPS_JSON",
    "STEPS_LOG",
    "CapacityOptions",
    "CapacityResult",
    "IngestSample",
    "Knee",
    "KneeBounds",
    "LiveMonitor",
    "SafetyBounds",
    "StepMetrics",
    "StepWindow",
    "analyze_capacity",
    "breaches_by_step",
    "capacity_document",
    "capacity_rows",
    "capacity_scenario_path",
    "find_knee",
    "offered_increase",
    "reanalyze_capacity",
    "render_capacity_markdown",
    "report_steps",
    "run_capacity",
    "step_breaches",
    "step_metrics",
    "step_windows",
]
