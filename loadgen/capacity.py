"""`loadgen capacity`: step the load up until tracing (or the mesh) stops keeping up.

    plan (loadgen.traffic.shape.StepPlan) -> execute_run(scenario = traced user + step shape,
    on_tick = LiveMonitor: collector ingest stats + safety abort) -> per-step metrics (pure
    `step_metrics`) -> knee (pure `find_knee`) -> capacity.json, capacity.md, steps.json

Each step is measured over its window after the ramp, from what is on disk: the ledger (requests
by start time), fetched.jsonl (the read-back after the whole run), reference.jsonl (reference
traces by start time), the shape's step log (when each step really began) and the collector's
ingest counters sampled once a second (embedded collector only: `GET /loadgen/stats`).

**The knee** is the first step where a bound breaks: p99 latency above the SLO, errors above a
fraction, mesh collection below a fraction, or (steps with a target rate) achieved throughput
below a fraction of the target. Bounds are checked on point estimates; each rate is reported
with its Wilson 95 % interval to judge them.

**The safety abort** stops a run that hurts more than it measures. Live errors come from the
ledger counts (the last `window_s`). Live collection is a quick backend query of the sampled
trace ids whose requests ended `settle_s` to `settle_s + window_s` ago (each id queried once,
at most `max_ids` per check): the same end-to-end definition as the final collection rate, for
any backend. (The collector's own counters would only see loss at the collector, not spans an
Envoy never sent, and exist only on the embedded collector.) It is an early signal, so its
bound is meant to be loose (hard limits, not the knee's).

This process never imports Locust (see loadgen.run); the shape module is imported for its pure
plan only.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from loadgen.analysis.reconcile import (
    Expectation,
    Outcome,
    TraceObservation,
    classify,
    ledger_trace_id,
    upstream_decision,
)
from loadgen.analysis.stats import Proportion, percentile
from loadgen.backends.base import (
    BackendError,
    BackendOptions,
    FetchStatus,
    TraceBackend,
)
from loadgen.backends.factory import parse_backend_spec
from loadgen.emitter import read_reference_log, summarize_reference_log
from loadgen.exitcodes import EXIT_COMPONENT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_VERDICT_FAILED
from loadgen.ledger import LiveCounts, read_ledger
from loadgen.mesh.propagation import Decision, mode_spec, normalize_trace_id
from loadgen.redact import redact_data
from loadgen.report.html import render_run_folder
from loadgen.run import RunError, RunOptions, RunResult, Status, execute_run
from loadgen.runfiles import load_fetched, write_json
from loadgen.traffic.shape import StepPlan

__all__ = [
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
    "capacity_rows",
    "capacity_scenario_path",
    "find_knee",
    "reanalyze_capacity",
    "render_capacity_markdown",
    "report_steps",
    "run_capacity",
    "step_breaches",
    "step_metrics",
    "step_windows",
]

SCHEMA_VERSION = 1
STEPS_LOG = "steps.jsonl"  # written by the shape (LOADGEN_STEPS_LOG)
INGEST_LOG = "ingest.jsonl"  # collector ingest counters, one sample per tick
CAPACITY_JSON = "capacity.json"
CAPACITY_MD = "capacity.md"
STEPS_JSON = "steps.json"  # {"steps": [...], "knee": index|None}: what report/html.py reads

REASONS = ("errors", "latency", "collection", "throughput")  # checked in this order

_SCENARIO_TEXT = '''"""Capacity steps (a packaged copy of scenarios/capacity.py, written by loadgen.capacity)."""

from loadgen.traffic.default_scenario import MeshUser
from loadgen.traffic.shape import StepShape

__all__ = ["MeshUser", "StepShape"]
'''


# --- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KneeBounds:
    """When a step counts as past the knee (None turns a bound off). Fractions are in [0, 1]."""

    p99_ms: float | None = None  # latency SLO
    max_error_rate: float | None = 0.01
    min_collection: float | None = 0.99  # mesh collection (found complete / decided sampled)
    min_throughput: float | None = 0.9  # achieved / target req/s (steps with a target rate)


@dataclass(frozen=True)
class SafetyBounds:
    """Hard limits checked while the load runs; the run stops early when one trips."""

    max_error_rate: float | None = 0.5  # of the requests in the last window_s
    min_collection: float | None = 0.5  # live collection of the sampled traces checked in the window
    window_s: float = 5.0
    min_requests: int = 50  # judge errors only on at least this many requests
    min_sampled: int = 30  # judge collection only on at least this many checked traces
    settle_s: float | None = None  # wait this long after a request before querying its trace
    #                                (default: the run's read-back quiet period + 1 s)
    check_every_s: float = 2.0
    max_ids: int = 200  # trace ids queried per check at most (an even spread of the due ones)


@dataclass
class CapacityOptions:
    steps: str = "users:5,10,20,40"  # users:N,N,... | rate:R,R,...
    step_s: float = 20.0
    ramp_s: float = 3.0
    step_users: int = 32  # rate steps: the fixed user count
    user_rate: float = 0.0  # users steps: each user's req/s (0 = as fast as it goes)
    bounds: KneeBounds = field(default_factory=KneeBounds)
    safety: SafetyBounds = field(default_factory=SafetyBounds)
    # Target, embedded mesh (tracing, faults), mix, reference spans, read-back, output, run id.
    # duration, users, spawn rate, rate, scenario (unless given), extra_env and on_tick are set here.
    run: RunOptions = field(default_factory=RunOptions)

    def plan(self) -> StepPlan:
        return StepPlan.parse(
            self.steps,
            step_s=self.step_s,
            ramp_s=self.ramp_s,
            users=self.step_users,
            user_rate=self.user_rate,
        )


# --- step windows and metrics (pure) -----------------------------------------------------------


@dataclass(frozen=True)
class StepWindow:
    """One step as it ran: measured over [measure_start, end) (the ramp left out), epoch s."""

    index: int
    label: str
    kind: str  # "users" | "rate"
    users: int
    offered_rps: float | None  # the target req/s (None: closed-loop users)
    start: float
    measure_start: float
    end: float
    complete: bool  # ran its full length (not cut by an abort or interruption)

    @property
    def measured_s(self) -> float:
        return max(0.0, self.end - self.measure_start)


def step_windows(
    plan: StepPlan,
    events: Iterable[Mapping[str, Any]],
    *,
    stop_at: float | None = None,
    first_ts: float | None = None,
    last_ts: float | None = None,
) -> list[StepWindow]:
    """Windows of the steps that ran, from the shape's step log (`{"ev":"step","index":i,"t":..}`,
    `{"ev":"end","t":..}`). Without a log, the nominal schedule from the first request
    (`first_ts`). `stop_at` (an abort) and `last_ts` (the last request) cut an unfinished step."""
    starts: dict[int, float] = {}
    end_t: float | None = None
    for ev in events:
        t = ev.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool):
            continue
        index = ev.get("index")
        if ev.get("ev") == "step" and isinstance(index, int) and 0 <= index < len(plan.targets):
            starts.setdefault(index, float(t))
        elif ev.get("ev") == "end":
            end_t = float(t)
    if not starts:
        if first_ts is None:
            return []
        for i in range(len(plan.targets)):
            begin = first_ts + i * plan.step_s
            if last_ts is not None and begin > last_ts:
                break
            starts[i] = begin
        if last_ts is not None and last_ts >= first_ts + plan.duration_s:
            end_t = first_ts + plan.duration_s
    order = sorted(starts)
    windows: list[StepWindow] = []
    for pos, i in enumerate(order):
        start = starts[i]
        if pos + 1 < len(order):
            end, complete = starts[order[pos + 1]], True
        elif end_t is not None:
            end, complete = end_t, True
        else:
            end, complete = start + plan.step_s, False
            if last_ts is not None:
                end = min(end, last_ts)
        if stop_at is not None and stop_at < end:
            end, complete = stop_at, False
        end = max(end, start)
        windows.append(
            StepWindow(
                index=i,
                label=plan.label(i),
                kind=plan.kind,
                users=plan.users_for(i),
                offered_rps=plan.offered_rps(i),
                start=start,
                measure_start=min(start + plan.ramp_s, end),
                end=end,
                complete=complete,
            )
        )
    return windows


@dataclass(frozen=True)
class IngestSample:
    """The collector's cumulative ingest counters at time t (GET /loadgen/stats)."""

    t: float
    received: int  # valid spans decoded, before faults
    accepted: int  # spans stored (queryable)
    dropped: int  # answered 202 but discarded (drop fault, ingest limit)

    @classmethod
    def from_stats(cls, t: float, stats: Mapping[str, Any]) -> IngestSample:
        ingest = stats.get("ingest") or {}
        return cls(
            t,
            int(ingest.get("spans_received", 0)),
            int(stats.get("spans_accepted", 0)),
            int(stats.get("spans_dropped", 0)),
        )


def _counter_at(samples: Sequence[IngestSample], t: float, key: str) -> float | None:
    """A cumulative counter at t, linearly interpolated; None outside the sampled span."""
    if not samples or t < samples[0].t or t > samples[-1].t:
        return None
    times = [s.t for s in samples]
    j = bisect.bisect_left(times, t)
    if times[j] == t:
        return float(getattr(samples[j], key))
    a, b = samples[j - 1], samples[j]
    va, vb = float(getattr(a, key)), float(getattr(b, key))
    return va + (vb - va) * (t - a.t) / (b.t - a.t)


def _ingest_rates(samples: Sequence[IngestSample], start: float, end: float) -> dict[str, float] | None:
    if end <= start:
        return None
    out: dict[str, float] = {}
    for key in ("received", "accepted", "dropped"):
        a, b = _counter_at(samples, start, key), _counter_at(samples, end, key)
        if a is None or b is None:
            return None
        out[f"{key}_per_s"] = (b - a) / (end - start)
    return out


@dataclass(frozen=True)
class StepMetrics:
    window: StepWindow
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    decision: Proportion = Proportion(0, 0)  # upstream saw sampled / decided, proxy-decided modes
    collection: Proportion = Proportion(0, 0)  # found complete / decided sampled (unknown excluded)
    collection_unknown: int = 0
    collection_partial: int = 0
    reference: Proportion = Proportion(0, 0)  # reference traces found complete / exported
    ingest: dict[str, float] | None = None  # received/accepted/dropped spans per second

    @property
    def error_rate(self) -> Proportion:
        return Proportion(self.errors, self.requests)

    @property
    def achieved_rps(self) -> float | None:
        s = self.window.measured_s
        return self.requests / s if s > 0 else None

    @property
    def throughput_ratio(self) -> float | None:
        offered, achieved = self.window.offered_rps, self.achieved_rps
        return achieved / offered if offered and achieved is not None else None

    def to_row(self, knee: bool = False, breaches: Sequence[str] = ()) -> dict[str, Any]:
        """Summary-compatible step (what report/html.py plots: target_rps or users on x,
        achieved_rps, p99_ms, collection, knee)."""
        w = self.window
        row: dict[str, Any] = {"index": w.index, "label": w.label, "kind": w.kind, "users": w.users}
        if w.offered_rps is not None:
            row["target_rps"] = w.offered_rps
        row.update(
            start=w.start,
            measure_start=w.measure_start,
            end=w.end,
            measured_s=w.measured_s,
            complete=w.complete,
            requests=self.requests,
            achieved_rps=self.achieved_rps,
            throughput_ratio=self.throughput_ratio,
            p50_ms=self.p50_ms,
            p95_ms=self.p95_ms,
            p99_ms=self.p99_ms,
            errors=self.error_rate.to_dict(),
            decision=self.decision.to_dict(),
            collection=self.collection.to_dict(),
            collection_unknown=self.collection_unknown,
            collection_partial=self.collection_partial,
            reference_collection=self.reference.to_dict(),
            ingest=self.ingest,
            ingest_spans_per_s=self.ingest["accepted_per_s"] if self.ingest else None,
            breaches=list(breaches),
            knee=knee,
        )
        return row


@dataclass
class _Tally:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    decision: list[int] = field(default_factory=lambda: [0, 0])
    collection: list[int] = field(default_factory=lambda: [0, 0])
    unknown: int = 0
    partial: int = 0
    reference: list[int] = field(default_factory=lambda: [0, 0])


def _step_of(windows: Sequence[StepWindow], starts: list[float], ts: float) -> int | None:
    j = bisect.bisect_right(starts, ts) - 1
    if j < 0 or ts >= windows[j].end:
        return None  # before the first window, in a ramp, or after the end
    return j


def step_metrics(
    ledger_records: Iterable[Mapping[str, Any]],
    observations: Mapping[str, TraceObservation],
    steps: Sequence[StepWindow],
    expect: Expectation,
    *,
    reference: Iterable[tuple[float | None, str, str, int]] = (),
    ingest: Sequence[IngestSample] = (),
) -> list[StepMetrics]:
    """Per-step numbers (pure). A request belongs to the step whose measured window holds its
    start time; requests in a ramp belong to none. `reference` is (start time, trace id, emitter
    state, expected spans) per reference trace; `ingest` the collector's counter samples."""
    steps = sorted(steps, key=lambda w: w.measure_start)
    starts = [w.measure_start for w in steps]
    tallies = [_Tally() for _ in steps]
    for rec in ledger_records:
        ts = rec.get("ts")
        if not isinstance(ts, int | float) or isinstance(ts, bool):
            continue
        j = _step_of(steps, starts, float(ts))
        if j is None:
            continue
        t = tallies[j]
        t.requests += 1
        if rec.get("status") != 200:
            t.errors += 1
        elif isinstance(latency := rec.get("latency_ms"), int | float):
            t.latencies.append(float(latency))
        decided = upstream_decision(rec)
        spec = mode_spec(rec.get("mode"))
        if decided is not None and spec is not None and spec.decision is Decision.PROXY:
            t.decision[1] += 1
            t.decision[0] += int(decided)
        if decided:
            tid = ledger_trace_id(rec)
            outcome = classify(True, observations.get(tid) if tid else None, expect)
            if outcome is Outcome.UNKNOWN:
                t.unknown += 1
            else:
                t.collection[1] += 1
                t.collection[0] += int(outcome is Outcome.FOUND)
                t.partial += int(outcome is Outcome.PARTIAL)
    for started, trace_id, state, spans in reference:
        if started is None or state != "exported":
            continue
        j = _step_of(steps, starts, float(started))
        if j is None:
            continue
        obs = observations.get(normalize_trace_id(trace_id))
        if obs is None or obs.status is FetchStatus.ERROR:
            continue
        tallies[j].reference[1] += 1
        tallies[j].reference[0] += int(
            obs.status is FetchStatus.FOUND and obs.span_count > 0 and obs.span_count >= spans
        )
    samples = sorted(ingest, key=lambda s: s.t)
    out: list[StepMetrics] = []
    for w, t in zip(steps, tallies, strict=True):
        lat = sorted(t.latencies)
        out.append(
            StepMetrics(
                window=w,
                requests=t.requests,
                errors=t.errors,
                p50_ms=percentile(lat, 50),
                p95_ms=percentile(lat, 95),
                p99_ms=percentile(lat, 99),
                decision=Proportion(*t.decision),
                collection=Proportion(*t.collection),
                collection_unknown=t.unknown,
                collection_partial=t.partial,
                reference=Proportion(*t.reference),
                ingest=_ingest_rates(samples, w.measure_start, w.end),
            )
        )
    return out


# --- the knee (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Knee:
    index: int  # position in the steps list (= the step's index for a full run)
    reason: str  # the first broken bound, in REASONS order
    reasons: tuple[str, ...]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"reasons": list(self.reasons)}


def step_breaches(step: StepMetrics, bounds: KneeBounds) -> list[tuple[str, str]]:
    """(reason, detail) for every bound the step breaks; a step without requests breaks none
    (nothing to judge), nor does a bound without data (no sampled trace, no target rate)."""
    if step.requests == 0:
        return []
    out: list[tuple[str, str]] = []
    err = step.error_rate
    if bounds.max_error_rate is not None and err.rate is not None and err.rate > bounds.max_error_rate:
        out.append(("errors", f"errors {err.rate:.2%} ({err.k}/{err.n}) > {bounds.max_error_rate:.2%}"))
    if bounds.p99_ms is not None and step.p99_ms is not None and step.p99_ms > bounds.p99_ms:
        out.append(("latency", f"p99 {step.p99_ms:.1f} ms > SLO {bounds.p99_ms:g} ms"))
    col = step.collection
    if bounds.min_collection is not None and col.rate is not None and col.rate < bounds.min_collection:
        low, high = col.ci95
        out.append(
            (
                "collection",
                f"collection {col.rate:.2%} ({col.k}/{col.n}, 95% CI {low:.2%}-{high:.2%}) "
                f"< {bounds.min_collection:.2%}",
            )
        )
    ratio = step.throughput_ratio
    if bounds.min_throughput is not None and ratio is not None and ratio < bounds.min_throughput:
        out.append(
            (
                "throughput",
                f"throughput {ratio:.1%} of the target: achieved {step.achieved_rps:.1f} of "
                f"{step.window.offered_rps:g} req/s < {bounds.min_throughput:.0%}",
            )
        )
    return out


def find_knee(steps: Sequence[StepMetrics], bounds: KneeBounds) -> Knee | None:
    """The first step where a bound breaks (pure), with every bound it breaks."""
    for pos, step in enumerate(steps):
        broken = step_breaches(step, bounds)
        if broken:
            return Knee(
                index=pos,
                reason=broken[0][0],
                reasons=tuple(r for r, _ in broken),
                detail="; ".join(d for _, d in broken),
            )
    return None


# --- documents and rendering (pure) --------------------------------------------------------------


def capacity_document(
    *,
    run_id: str,
    plan: StepPlan,
    bounds: KneeBounds,
    safety: SafetyBounds,
    metrics: Sequence[StepMetrics],
    knee: Knee | None,
    status: str,
    abort: Mapping[str, Any] | None,
    notes: Sequence[str] = (),
    live_checks: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    rows = []
    for pos, m in enumerate(metrics):
        rows.append(
            m.to_row(
                knee=knee is not None and knee.index == pos, breaches=[r for r, _ in step_breaches(m, bounds)]
            )
        )
    last_good = None
    if knee is None:
        last_good = len(rows) - 1 if rows else None
    elif knee.index > 0:
        last_good = knee.index - 1
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "status": status,  # complete | aborted | partial
        "plan": plan.to_dict(),
        "bounds": asdict(bounds),
        "safety": asdict(safety),
        "steps": rows,
        "knee": None if knee is None else knee.to_dict() | {"label": rows[knee.index]["label"]},
        "last_good": last_good,
        "abort": dict(abort) if abort else None,
        "live_checks": list(live_checks),
        "notes": list(notes),
    }


def report_steps(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The summary-compatible form for the HTML report: {"steps": [...], "knee": index|None}
    (the knee step also carries `knee: true`)."""
    knee = doc.get("knee")
    return {
        "steps": list(doc.get("steps") or []),
        "knee": knee.get("index") if isinstance(knee, Mapping) else None,
    }


def _num(v: object, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def _prop(p: object, ci: bool = False) -> str:
    if not isinstance(p, Mapping) or not p.get("n"):
        return "-"
    text = f"{p['rate']:.1%} ({p['k']}/{p['n']})"
    if ci:
        low, high = p["ci95"]
        text = f"{p['rate']:.1%} [{low:.1%}, {high:.1%}] ({p['k']}/{p['n']})"
    return text


CAPACITY_COLUMNS = (
    "step",
    "load",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors",
    "decision",
    "collection",
    "reference",
    "ingest spans/s",
    "bounds",
)


def capacity_rows(doc: Mapping[str, Any], *, ci: bool = False) -> list[list[str]]:
    """The steps table (header first) for a terminal or Markdown; the knee row says so."""
    rows = [list(CAPACITY_COLUMNS)]
    for s in doc.get("steps") or []:
        load = str(s.get("label", "?"))
        if s.get("target_rps") is not None and s.get("kind") == "users":
            load += f" ({s['target_rps']:g} req/s)"
        if not s.get("complete", True):
            load += " (cut short)"
        breaches = ", ".join(s.get("breaches") or []) or "ok"
        if s.get("knee"):
            breaches = f"KNEE: {breaches}"
        rows.append(
            [
                str(s.get("index")),
                load,
                _num(s.get("achieved_rps")),
                _num(s.get("p50_ms")),
                _num(s.get("p95_ms")),
                _num(s.get("p99_ms")),
                _prop(s.get("errors")),
                _prop(s.get("decision"), ci),
                _prop(s.get("collection"), ci),
                _prop(s.get("reference_collection"), ci),
                _num(s.get("ingest_spans_per_s"), "{:.0f}"),
                breaches,
            ]
        )
    return rows


def _bounds_text(bounds: Mapping[str, Any]) -> str:
    parts = []
    if bounds.get("p99_ms") is not None:
        parts.append(f"p99 <= {bounds['p99_ms']:g} ms")
    if bounds.get("max_error_rate") is not None:
        parts.append(f"errors <= {bounds['max_error_rate']:.2%}")
    if bounds.get("min_collection") is not None:
        parts.append(f"collection >= {bounds['min_collection']:.2%}")
    if bounds.get("min_throughput") is not None:
        parts.append(f"throughput >= {bounds['min_throughput']:.0%} of the target")
    return ", ".join(parts) or "none"


def render_capacity_markdown(doc: Mapping[str, Any]) -> str:
    """capacity.md from capacity.json's content (pure)."""
    plan = doc.get("plan") or {}
    lines = [
        f"# loadgen capacity `{doc.get('run_id', '?')}`",
        "",
        f"Steps `{plan.get('spec', '?')}`, {plan.get('step_s', 0):g} s each "
        f"({plan.get('ramp_s', 0):g} s ramp left out of the numbers). Status: **{doc.get('status', '?')}**.",
        "",
        f"Bounds: {_bounds_text(doc.get('bounds') or {})}.",
        "",
    ]
    knee = doc.get("knee")
    if isinstance(knee, Mapping):
        lines.append(f"**Knee: step {knee.get('index')} ({knee.get('label')})**: {knee.get('detail')}.")
        last_good = doc.get("last_good")
        steps = doc.get("steps") or []
        if isinstance(last_good, int) and 0 <= last_good < len(steps):
            lines.append(f"The last step within every bound: {steps[last_good].get('label')}.")
        else:
            lines.append("No step was within every bound.")
    elif doc.get("steps"):
        lines.append("**No knee**: every step stayed within the bounds.")
    else:
        lines.append("No step produced data.")
    abort = doc.get("abort")
    if isinstance(abort, Mapping):
        lines += ["", f"**Aborted** after {_num(abort.get('elapsed_s'))} s: {abort.get('reason')}."]
    rows = capacity_rows(doc, ci=True)
    lines += ["", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
    lines += [
        "",
        "req/s: requests started in the step's window after the ramp, per second. Rates are k/n "
        "with a Wilson 95 % interval: decision = upstream saw sampled / requests the proxy decided; "
        "collection = traces found complete / decided sampled; reference = reference traces found "
        "complete / exported. Ingest: spans/s the collector stored (embedded collector only).",
    ]
    notes = doc.get("notes") or []
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


# --- the live monitor (RunOptions.on_tick) -------------------------------------------------------


class LiveMonitor:
    """Called once a second by execute_run: samples the collector's ingest counters and checks
    the safety bounds; returns the abort reason when one trips. Never raises: a check that
    fails is turned off and noted."""

    def __init__(
        self,
        run_dir: Path,
        safety: SafetyBounds,
        *,
        backend_spec: str = "",
        backend_flags: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        backend: TraceBackend | None = None,
        expect: Expectation | None = None,
        settle_s: float | None = None,
        stats_url: str | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.safety = safety
        self.clock = clock
        self.samples: list[IngestSample] = []
        self.checks: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.abort_reason: str | None = None
        self.abort_at: float | None = None
        self.abort_elapsed_s: float | None = None
        self._backend_spec = backend_spec
        self._backend_flags = dict(backend_flags or {})
        self._backend = backend
        self._expect = expect
        self._settle_s = settle_s
        self._stats_url = stats_url
        self._meta_loaded = backend is not None and expect is not None
        self._http: httpx.Client | None = None
        self._snapshots: deque[tuple[float, int, int]] = deque()
        self._offset = 0
        self._partial = b""
        self._pending: list[tuple[float, str]] = []  # (request end, trace id) of sampled requests
        self._results: deque[tuple[float, bool]] = deque()  # (request end, found complete)
        self._last_check = 0.0
        self._collection_off = safety.min_collection is None
        self._ingest_off = False

    # -- the hook --

    def __call__(self, live: LiveCounts, elapsed_s: float) -> str | None:
        now = self.clock()
        if not self._meta_loaded:
            self._load_meta()
        if not self._ingest_off:
            self._guard("collector ingest stats", self._poll_ingest, now, "_ingest_off")
        reason = self._check_errors(live, now)
        if reason is None and not self._collection_off and self._meta_loaded:
            reason = self._guard("live collection check", self._check_collection, now, "_collection_off")
        if reason:
            self.abort_reason, self.abort_at, self.abort_elapsed_s = reason, now, elapsed_s
        return reason

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
        if self._http is not None:
            self._http.close()

    def _guard(self, what: str, fn: Callable[[float], str | None], now: float, off_flag: str) -> str | None:
        try:
            return fn(now)
        except Exception as exc:  # a monitoring failure must not break the run
            self.notes.append(f"{what} turned off: {exc!r}")
            setattr(self, off_flag, True)
            return None

    def _load_meta(self) -> None:
        """run.json (written before the load starts) says where the collector is and what a
        complete trace looks like."""
        try:
            meta = json.loads((self.run_dir / "run.json").read_text())
        except (OSError, ValueError):
            return
        self._meta_loaded = True
        target = meta.get("target") or {}
        exp = meta.get("expectation") or {}
        if self._expect is None:
            self._expect = Expectation.from_run_json(exp)
        if self._settle_s is None:
            quiet = exp.get("quiet_s")
            self._settle_s = (
                self.safety.settle_s
                if self.safety.settle_s is not None
                else (float(quiet) if isinstance(quiet, int | float) else 6.0) + 1.0
            )
        collector = str(target.get("collector") or "")
        if self._stats_url is None and collector:
            self._stats_url = collector.rstrip("/") + "/loadgen/stats"
        if self._stats_url is None:
            self._ingest_off = True
        if self._backend is None and not self._collection_off:
            spec = self._backend_spec or (f"zipkin:{collector}" if target.get("kind") == "embedded" else "")
            if not spec:
                self._collection_off = True
                self.notes.append("live collection check off: no backend to query")
                return
            try:
                self._backend = parse_backend_spec(
                    spec, BackendOptions.from_env(os.environ).merged(self._backend_flags)
                )
            except (ValueError, BackendError) as exc:
                self._collection_off = True
                self.notes.append(f"live collection check off: {exc}")

    # -- collector ingest --

    def _poll_ingest(self, now: float) -> str | None:
        if self._stats_url is None:
            return None
        if self._http is None:
            self._http = httpx.Client(timeout=1.0)
        resp = self._http.get(self._stats_url)
        if resp.status_code != 200:
            self._ingest_off = True
            self.notes.append(
                f"collector ingest stats unavailable ({self._stats_url} answered {resp.status_code})"
            )
            return None
        sample = IngestSample.from_stats(now, resp.json())
        self.samples.append(sample)
        with open(self.run_dir / INGEST_LOG, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(sample), separators=(",", ":")) + "\n")
        return None

    # -- errors --

    def _check_errors(self, live: LiveCounts, now: float) -> str | None:
        s = self.safety
        if not self._snapshots:
            self._snapshots.append((now - 1.0, 0, 0))
        self._snapshots.append((now, live.requests, live.errors))
        # Keep one snapshot at or before the window's start as the baseline.
        while len(self._snapshots) > 2 and self._snapshots[1][0] <= now - s.window_s:
            self._snapshots.popleft()
        if s.max_error_rate is None:
            return None
        t0, r0, e0 = self._snapshots[0]
        requests, errors = live.requests - r0, live.errors - e0
        if requests >= s.min_requests and errors / requests > s.max_error_rate:
            return (
                f"safety: errors {errors / requests:.0%} of the last {now - t0:.0f} s's {requests} requests "
                f"> {s.max_error_rate:.0%}"
            )
        return None

    # -- live collection --

    def _read_new_records(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.run_dir / "ledger.jsonl", "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec

    def _check_collection(self, now: float) -> str | None:
        s = self.safety
        for rec in self._read_new_records():
            tid = ledger_trace_id(rec)
            ts = rec.get("ts")
            if tid and upstream_decision(rec) and isinstance(ts, int | float):
                self._pending.append((float(ts) + float(rec.get("latency_ms") or 0.0) / 1000.0, tid))
        if now - self._last_check < s.check_every_s:
            return None
        self._last_check = now
        assert self._settle_s is not None and self._expect is not None and self._backend is not None
        due_before = now - self._settle_s
        due = [p for p in self._pending if p[0] <= due_before]
        self._pending = [p for p in self._pending if p[0] > due_before]
        if len(due) > s.max_ids:
            step = len(due) / s.max_ids
            due = [due[int(i * step)] for i in range(s.max_ids)]
        if due:
            fetched = self._backend.fetch_many([tid for _, tid in due])
            for end, tid in due:
                got = fetched.get(normalize_trace_id(tid))
                obs = TraceObservation.from_fetched(got) if got is not None else None
                outcome = classify(True, obs, self._expect)
                if outcome is not Outcome.UNKNOWN:
                    self._results.append((end, outcome is Outcome.FOUND))
        while self._results and self._results[0][0] < due_before - s.window_s:
            self._results.popleft()
        n = len(self._results)
        k = sum(1 for _, found in self._results if found)
        self.checks.append({"t": now, "k": k, "n": n, "queried": len(due)})
        if s.min_collection is not None and n >= s.min_sampled and k / n < s.min_collection:
            return (
                f"safety: live collection {k}/{n} = {k / n:.0%} of the sampled traces whose requests ended "
                f"{self._settle_s:g}-{self._settle_s + s.window_s:g} s ago < {s.min_collection:.0%}"
            )
        return None


# --- running ---------------------------------------------------------------------------------


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


def _no_cleanup() -> None:
    pass


def capacity_scenario_path() -> tuple[str, Callable[[], None]]:
    """The locustfile for capacity runs and a cleanup: scenarios/capacity.py next to the package
    (a source checkout or editable install), else a copy written to a temporary folder."""
    here = Path(__file__).resolve().parent.parent / "scenarios" / "capacity.py"
    if here.is_file():
        return str(here), _no_cleanup
    folder = tempfile.mkdtemp(prefix="loadgen-capacity-")
    path = Path(folder) / "capacity_scenario.py"
    path.write_text(_SCENARIO_TEXT)
    return str(path), lambda: shutil.rmtree(folder, ignore_errors=True)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return list(read_ledger(path))  # any JSONL of objects: bad lines (not UTF-8, torn) skipped


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
    first_ts: float | None = None
    last_ts: float | None = None
    for rec in read_ledger(ledger):
        ts = rec.get("ts")
        if isinstance(ts, int | float):
            first_ts = ts if first_ts is None else min(first_ts, ts)
            last_ts = ts if last_ts is None else max(last_ts, ts)
    stop_at = abort.get("at") if abort else None
    windows = step_windows(
        plan,
        _read_jsonl(run_dir / STEPS_LOG),
        stop_at=float(stop_at) if isinstance(stop_at, int | float) else None,
        first_ts=first_ts,
        last_ts=last_ts,
    )
    reference: list[tuple[float | None, str, str, int]] = []
    ref_path = run_dir / "reference.jsonl"
    if ref_path.exists():
        ref = summarize_reference_log(read_reference_log(ref_path))
        reference = [(o.t, tid, o.state, o.spans) for tid, o in ref.traces.items()]
    if ingest is None:
        ingest = [
            IngestSample(**{k: r[k] for k in ("t", "received", "accepted", "dropped")})
            for r in _read_jsonl(run_dir / INGEST_LOG)
        ]
    metrics = step_metrics(
        read_ledger(ledger),
        load_fetched(run_dir / "fetched.jsonl"),
        windows,
        expect,
        reference=reference,
        ingest=ingest,
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
    cleanup: Callable[[], None] = _no_cleanup
    scenario = base.scenario
    if not scenario:
        scenario, cleanup = capacity_scenario_path()
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
        cleanup()
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
