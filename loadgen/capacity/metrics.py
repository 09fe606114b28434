"""Per-step numbers of a capacity run (pure): when each step ran (`step_windows`), and what the
requests, traces, reference traces and collector ingest of its measured window add up to
(`step_metrics`)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loadgen.analysis.reconcile import (
    Expectation,
    Outcome,
    TraceObservation,
    classify,
    ledger_trace_id,
    upstream_decision,
)
from loadgen.analysis.stats import Proportion, percentile
from loadgen.backends.base import FetchStatus
from loadgen.mesh.expect import Decision
from loadgen.mesh.ids import normalize_trace_id
from loadgen.mesh.modes import mode_spec
from loadgen.traffic.shape import StepPlan


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


def _logged_starts(
    plan: StepPlan, events: Iterable[Mapping[str, Any]]
) -> tuple[dict[int, float], float | None]:
    """(step index -> start, end) from the shape's step log; the first start of a step counts."""
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
    return starts, end_t


def _nominal_starts(
    plan: StepPlan, first_ts: float, last_ts: float | None
) -> tuple[dict[int, float], float | None]:
    """(step index -> start, end) on the plan's schedule from the first request: the steps that
    began by the last request, and an end when the last request came after the whole plan."""
    starts: dict[int, float] = {}
    for i in range(len(plan.targets)):
        begin = first_ts + i * plan.step_s
        if last_ts is not None and begin > last_ts:
            break
        starts[i] = begin
    end_t = (
        first_ts + plan.duration_s if last_ts is not None and last_ts >= first_ts + plan.duration_s else None
    )
    return starts, end_t


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
    starts, end_t = _logged_starts(plan, events)
    if not starts:
        if first_ts is None:
            return []
        starts, end_t = _nominal_starts(plan, first_ts, last_ts)
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

    def to_row(
        self, knee: bool = False, breaches: Sequence[str] = (), judged: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Summary-compatible step (what report/html.py plots: target_rps or users on x,
        achieved_rps, p99_ms, collection, knee). `judged`: the bounds the step had data for
        (an empty list: not judged; None: not known)."""
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
            judged=None if judged is None else list(judged),
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

    def add_request(
        self, rec: Mapping[str, Any], observations: Mapping[str, TraceObservation], expect: Expectation
    ) -> None:
        """One ledger record: its outcome, latency, decision and (decided sampled) collection."""
        self.requests += 1
        if rec.get("status") != 200:
            self.errors += 1
        elif isinstance(latency := rec.get("latency_ms"), int | float):
            self.latencies.append(float(latency))
        decided = upstream_decision(rec, expect.mode_context().tracer)  # the run's tracer (run.json)
        spec = mode_spec(rec.get("mode"))
        if decided is not None and spec is not None and spec.decision is Decision.PROXY:
            self.decision[1] += 1
            self.decision[0] += int(decided)
        if decided:
            tid = ledger_trace_id(rec)
            outcome = classify(True, observations.get(tid) if tid else None, expect)
            if outcome is Outcome.UNKNOWN:
                self.unknown += 1
            else:
                self.collection[1] += 1
                self.collection[0] += int(outcome is Outcome.FOUND)
                self.partial += int(outcome is Outcome.PARTIAL)

    def add_reference(self, obs: TraceObservation, spans: int) -> None:
        """One exported reference trace that was queried without an error."""
        self.reference[1] += 1
        self.reference[0] += int(
            obs.status is FetchStatus.FOUND and obs.span_count > 0 and obs.span_count >= spans
        )

    def metrics(self, window: StepWindow, samples: Sequence[IngestSample]) -> StepMetrics:
        lat = sorted(self.latencies)
        return StepMetrics(
            window=window,
            requests=self.requests,
            errors=self.errors,
            p50_ms=percentile(lat, 50),
            p95_ms=percentile(lat, 95),
            p99_ms=percentile(lat, 99),
            decision=Proportion(*self.decision),
            collection=Proportion(*self.collection),
            collection_unknown=self.unknown,
            collection_partial=self.partial,
            reference=Proportion(*self.reference),
            ingest=_ingest_rates(samples, window.measure_start, window.end),
        )


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
        if j is not None:
            tallies[j].add_request(rec, observations, expect)
    for started, trace_id, state, spans in reference:
        if started is None or state != "exported":
            continue
        j = _step_of(steps, starts, float(started))
        if j is None:
            continue
        obs = observations.get(normalize_trace_id(trace_id))
        if obs is not None and obs.status is not FetchStatus.ERROR:
            tallies[j].add_reference(obs, spans)
    samples = sorted(ingest, key=lambda s: s.t)
    return [t.metrics(w, samples) for w, t in zip(steps, tallies, strict=True)]
