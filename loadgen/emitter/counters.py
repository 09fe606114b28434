"""The emitter's accounting vocabulary: a trace's final state and the counters' snapshot."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["EmitterCounters", "TraceState", "classify_trace"]

TraceState = Literal["exported", "failed", "dropped"]


def classify_trace(expected: int, ok: int, failed: int) -> TraceState:
    """Final state of one trace. A failed export outranks a drop: the collector saw trouble."""
    if ok >= expected:
        return "exported"
    if failed > 0:
        return "failed"
    return "dropped"


@dataclass(frozen=True, slots=True)
class EmitterCounters:
    """Snapshot of the emitter's accounting.

    Invariants (always): ``traces_started = traces_exported + traces_failed + traces_dropped +
    traces_pending`` and the same for spans. After ``stop()`` the pending counts are 0.
    """

    traces_started: int = 0
    traces_exported: int = 0
    traces_failed: int = 0
    traces_dropped: int = 0
    traces_pending: int = 0
    spans_started: int = 0
    spans_exported: int = 0
    spans_failed: int = 0
    spans_dropped: int = 0
    spans_pending: int = 0
    export_calls: int = 0
    export_failures: int = 0
    emit_errors: int = 0
    schedule_resets: int = 0
    # Spans exported for a trace the emitter had already finalized: 0 unless the SDK stops
    # exporting in FIFO order (the drop accounting relies on it) - a self-check, not a metric.
    late_spans: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
