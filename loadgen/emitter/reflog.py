"""Reading the reference log back: a pure fold of its records into per-trace outcomes and totals."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.emitter.counters import TraceState, classify_trace
from loadgen.ledger import parse_record

__all__ = ["ReferenceSummary", "TraceOutcome", "read_reference_log", "summarize_reference_log"]


@dataclass(slots=True)
class TraceOutcome:
    """What the log says about one reference trace."""

    state: TraceState
    spans: int
    exported_spans: int = 0
    failed_spans: int = 0
    t: float | None = None
    seq: int | None = None


@dataclass(slots=True)
class ReferenceSummary:
    """The fold of a reference log. ``started == exported + failed + dropped`` always.

    In a log without an end record (the process died), ``dropped`` also covers traces that were still
    queued when it died: "not known to be exported" is the only safe reading.
    """

    started: int = 0
    exported: int = 0
    failed: int = 0
    dropped: int = 0
    spans_started: int = 0
    spans_exported: int = 0
    spans_failed: int = 0
    spans_dropped: int = 0
    export_calls: int = 0
    export_failures: int = 0
    # Spans in export records for a trace with no start record (corrupt or spliced log).
    orphan_spans: int = 0
    first_t: float | None = None
    last_t: float | None = None
    complete: bool = False  # an end record was seen
    run_id: str | None = None
    protocol: str | None = None  # from the open record (logs before issue 12 have none: zipkin)
    end_counters: dict[str, Any] | None = None
    traces: dict[str, TraceOutcome] = field(default_factory=dict)

    def iter_traces(self) -> Iterator[tuple[str, TraceState, int]]:
        """(trace_id, state, expected_spans) per started trace, in start order."""
        for tid, outcome in self.traces.items():
            yield tid, outcome.state, outcome.spans

    def exported_trace_ids(self) -> list[str]:
        """The denominator of the reference collection rate."""
        return [tid for tid, o in self.traces.items() if o.state == "exported"]


def summarize_reference_log(lines: Iterable[dict[str, Any]]) -> ReferenceSummary:
    """Fold reference-log records into per-trace outcomes and totals. Pure; unknown events ignored."""
    s = ReferenceSummary()
    for rec in lines:
        t = rec.get("t")
        if isinstance(t, int | float):
            if s.first_t is None or t < s.first_t:
                s.first_t = float(t)
            if s.last_t is None or t > s.last_t:
                s.last_t = float(t)
        ev = rec.get("ev")
        if ev == "start":
            _fold_start(s, rec, t)
        elif ev == "export":
            _fold_export(s, rec)
        elif ev == "open":
            s.run_id = rec.get("run_id") if s.run_id is None else s.run_id
            if s.protocol is None and isinstance(rec.get("protocol"), str):
                s.protocol = rec["protocol"]
        elif ev == "end":
            s.complete = True
            counters = rec.get("counters")
            s.end_counters = dict(counters) if isinstance(counters, dict) else None
    _close_traces(s)
    return s


def _fold_start(s: ReferenceSummary, rec: dict[str, Any], t: object) -> None:
    tid = str(rec["trace"])
    if tid in s.traces:
        return  # a duplicated line must not double-count
    n = int(rec["spans"])
    seq = rec.get("seq")
    s.traces[tid] = TraceOutcome(
        "dropped",
        n,
        t=float(t) if isinstance(t, int | float) else None,
        seq=int(seq) if isinstance(seq, int) else None,
    )
    s.started += 1
    s.spans_started += n


def _fold_export(s: ReferenceSummary, rec: dict[str, Any]) -> None:
    ok = bool(rec.get("ok"))
    s.export_calls += 1
    if not ok:
        s.export_failures += 1
    for tid, count in dict(rec.get("spans") or {}).items():
        o = s.traces.get(tid)
        if o is None:
            s.orphan_spans += int(count)
        elif ok:
            o.exported_spans += int(count)
        else:
            o.failed_spans += int(count)


def _close_traces(s: ReferenceSummary) -> None:
    """Every trace's final state, and the totals: started == exported + failed + dropped."""
    for o in s.traces.values():
        o.state = classify_trace(o.spans, o.exported_spans, o.failed_spans)
        if o.state == "exported":
            s.exported += 1
        elif o.state == "failed":
            s.failed += 1
        else:
            s.dropped += 1
        s.spans_exported += o.exported_spans
        s.spans_failed += o.failed_spans
        s.spans_dropped += max(0, o.spans - o.exported_spans - o.failed_spans)


def read_reference_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a reference log; a torn last line (process killed mid-write) or any line that is
    not a UTF-8 JSON object is skipped."""
    with Path(path).open("rb") as f:
        for line in f:
            rec = parse_record(line) if line.strip() else None
            if rec is not None:
                yield rec
