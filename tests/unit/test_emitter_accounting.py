"""Accounting of the reference side-emitter: the log fold, and the live counters against ground truth.

The live tests use the real SDK (TracerProvider + BatchSpanProcessor) with an in-process exporter in
place of the Zipkin one, so what the exporter actually received is known exactly.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from loadgen.emitter import (
    EmitterCounters,
    ReferenceEmitter,
    ReferenceSummary,
    read_reference_log,
    summarize_reference_log,
    zipkin_spans_url,
)

A = "a" * 32
B = "b" * 32
C = "c" * 32


def start(tid: str, spans: int = 3, t: float = 100.0) -> dict[str, Any]:
    return {"ev": "start", "trace": tid, "spans": spans, "t": t}


def export(spans: dict[str, int], ok: bool = True, t: float = 101.0) -> dict[str, Any]:
    return {"ev": "export", "ok": ok, "t": t, "spans": spans, "error": None if ok else "HTTP 503: busy"}


def assert_balanced(s: ReferenceSummary) -> None:
    assert s.started == s.exported + s.failed + s.dropped
    assert s.spans_started == s.spans_exported + s.spans_failed + s.spans_dropped


# --------------------------------------------------------------------------------------------------
# summarize_reference_log on hand-written logs
# --------------------------------------------------------------------------------------------------


def test_summary_all_exported() -> None:
    log = [
        {"ev": "open", "t": 99.5, "run_id": "r1"},
        start(A, t=100.0),
        start(B, t=100.5),
        export({A: 3, B: 1}, t=101.0),
        export({B: 2}, t=102.0),
        {"ev": "end", "t": 102.5, "counters": {"traces_started": 2}},
    ]
    s = summarize_reference_log(log)
    assert (s.started, s.exported, s.failed, s.dropped) == (2, 2, 0, 0)
    assert (s.spans_started, s.spans_exported) == (6, 6)
    assert (s.export_calls, s.export_failures) == (2, 0)
    assert s.complete and s.run_id == "r1"
    assert s.end_counters == {"traces_started": 2}
    assert (s.first_t, s.last_t) == (99.5, 102.5)
    assert list(s.iter_traces()) == [(A, "exported", 3), (B, "exported", 3)]
    assert s.exported_trace_ids() == [A, B]
    assert_balanced(s)


def test_summary_one_failed_batch_fails_every_trace_it_touched() -> None:
    log = [
        start(A),
        start(B),
        start(C),
        export({A: 3, B: 1}),
        export({B: 2, C: 3}, ok=False),
        {"ev": "end", "t": 103.0, "counters": {}},
    ]
    s = summarize_reference_log(log)
    assert (s.started, s.exported, s.failed, s.dropped) == (3, 1, 2, 0)
    assert s.traces[A].state == "exported"
    # B had one span in a good batch and two in the failed one: failed, not partially exported.
    assert (s.traces[B].state, s.traces[B].exported_spans, s.traces[B].failed_spans) == ("failed", 1, 2)
    assert s.traces[C].state == "failed"
    assert (s.export_calls, s.export_failures) == (2, 1)
    assert (s.spans_exported, s.spans_failed, s.spans_dropped) == (4, 5, 0)
    assert_balanced(s)


def test_summary_spans_never_exported_are_dropped() -> None:
    log = [
        start(A),
        start(B),
        start(C),
        export({A: 2}),  # A lost one span in the queue
        export({C: 3}),  # B never reached the exporter at all
        {"ev": "end", "t": 103.0, "counters": {}},
    ]
    s = summarize_reference_log(log)
    assert (s.started, s.exported, s.failed, s.dropped) == (3, 1, 0, 2)
    assert s.traces[A].state == "dropped" and s.traces[A].exported_spans == 2
    assert s.traces[B].state == "dropped" and s.traces[B].exported_spans == 0
    assert s.spans_dropped == 1 + 3
    assert s.exported_trace_ids() == [C]
    assert_balanced(s)


def test_summary_failed_outranks_dropped() -> None:
    s = summarize_reference_log([start(A), export({A: 1}, ok=False), export({A: 1})])
    assert s.traces[A].state == "failed"
    assert (s.failed, s.dropped, s.spans_dropped) == (1, 0, 1)
    assert_balanced(s)


def test_summary_truncated_log_without_end_record() -> None:
    log = [start(A), start(B), export({A: 3}), start(C, t=104.0)]
    s = summarize_reference_log(log)
    assert not s.complete and s.end_counters is None
    # B and C were possibly still queued when the process died: not known exported.
    assert (s.started, s.exported, s.failed, s.dropped) == (3, 1, 0, 2)
    assert s.last_t == 104.0
    assert_balanced(s)


def test_summary_ignores_duplicates_orphans_and_unknown_events() -> None:
    log = [
        start(A),
        start(A),  # duplicated line
        {"ev": "something-new", "t": 100.0},
        export({A: 3, B: 2}),  # B has no start record
    ]
    s = summarize_reference_log(log)
    assert (s.started, s.exported, s.orphan_spans) == (1, 1, 2)
    assert s.spans_exported == 3
    assert_balanced(s)


def test_summary_of_empty_log() -> None:
    s = summarize_reference_log([])
    assert (s.started, s.exported, s.failed, s.dropped, s.first_t) == (0, 0, 0, 0, None)


def test_read_reference_log_skips_torn_last_line(tmp_path: Path) -> None:
    p = tmp_path / "reference.jsonl"
    p.write_text(json.dumps(start(A)) + "\n" + json.dumps(export({A: 3})) + "\n" + '{"ev":"start","tra')
    s = summarize_reference_log(read_reference_log(p))
    assert (s.started, s.exported) == (1, 1)


def test_zipkin_spans_url() -> None:
    assert zipkin_spans_url("http://c:9411") == "http://c:9411/api/v2/spans"
    assert zipkin_spans_url("http://c:9411/") == "http://c:9411/api/v2/spans"
    assert zipkin_spans_url("http://c/zipkin/api/v2/spans") == "http://c/zipkin/api/v2/spans"


# --------------------------------------------------------------------------------------------------
# Live accounting with the real SDK and an in-process exporter
# --------------------------------------------------------------------------------------------------


class RecordingExporter(SpanExporter):
    """Records what it was given, per call; the outcome of each call is programmable."""

    def __init__(self, outcome: Callable[[int], SpanExportResult] | None = None) -> None:
        self.outcome = outcome or (lambda call: SpanExportResult.SUCCESS)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls: list[tuple[list[str], bool]] = []  # (trace ids of the spans, ok)
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.gate.wait()
        tids = [format(s.context.trace_id, "032x") for s in spans if s.context is not None]
        with self.lock:
            result = self.outcome(len(self.calls))
            self.calls.append((tids, result is SpanExportResult.SUCCESS))
        return result

    def truth(self) -> dict[str, str]:
        """Per trace, the state the exporter's own view implies (traces it never saw are absent)."""
        ok: Counter[str] = Counter()
        bad: Counter[str] = Counter()
        for tids, good in self.calls:
            (ok if good else bad).update(tids)
        out = {}
        for tid in set(ok) | set(bad):
            out[tid] = "failed" if bad[tid] else ("exported" if ok[tid] == 3 else "dropped")
        return out


def make(tmp_path: Path, exporter: SpanExporter, **kw: Any) -> ReferenceEmitter:
    kw.setdefault("rate_per_s", 0)
    return ReferenceEmitter(
        "http://127.0.0.1:9", "run-unit", tmp_path / "ref" / "reference.jsonl", exporter=exporter, **kw
    )


def check_against_log(em: ReferenceEmitter, c: EmitterCounters) -> ReferenceSummary:
    """Counters balance, and the log fold says exactly the same."""
    assert c.traces_pending == 0 and c.spans_pending == 0 and c.late_spans == 0
    assert c.traces_started == c.traces_exported + c.traces_failed + c.traces_dropped
    assert c.spans_started == c.spans_exported + c.spans_failed + c.spans_dropped
    s = summarize_reference_log(read_reference_log(em.log_path))
    assert s.complete
    got = (s.started, s.exported, s.failed, s.dropped, s.spans_exported, s.spans_failed, s.spans_dropped)
    want = (
        c.traces_started,
        c.traces_exported,
        c.traces_failed,
        c.traces_dropped,
        c.spans_exported,
        c.spans_failed,
        c.spans_dropped,
    )
    assert got == want
    assert (s.export_calls, s.export_failures) == (c.export_calls, c.export_failures)
    assert s.end_counters == c.as_dict()
    return s


def test_queue_overflow_counts_drops_exactly(tmp_path: Path) -> None:
    exp = RecordingExporter()
    exp.gate.clear()  # the first export blocks: the queue must overflow
    # A long schedule delay: the worker only wakes when a full batch is queued.
    em = make(tmp_path, exp, max_queue_size=6, max_export_batch_size=3, schedule_delay_ms=60_000)
    assert em.emit_burst(30) == 30
    assert exp.entered.wait(5)
    exp.gate.set()
    # Drops are settled by the next export, not held in memory until stop().
    assert em._provider is not None and em._provider.force_flush()
    live = em.counters()
    assert live.traces_pending == 0 and live.spans_pending == 0 and live.traces_dropped >= 27
    c = em.stop(timeout_s=10)
    assert c.traces_started == 30 and c.spans_started == 90
    # 90 spans, room for 6 queued + 3 in flight: at least 81 were dropped.
    assert c.spans_dropped >= 81 and c.traces_dropped >= 27
    assert c.traces_failed == 0
    s = check_against_log(em, c)
    # Ground truth: the emitter's per-trace verdict is what the exporter actually saw.
    truth = exp.truth()
    for tid, state, spans in s.iter_traces():
        assert spans == 3
        assert state == truth.get(tid, "dropped"), tid


def test_failed_and_exported_batches_per_trace(tmp_path: Path) -> None:
    # Every third call fails; batches of 2 split 3-span traces across calls, so some traces have
    # spans in both a good and a failed call.
    exp = RecordingExporter(
        lambda call: SpanExportResult.FAILURE if call % 3 == 2 else SpanExportResult.SUCCESS
    )
    em = make(tmp_path, exp, max_queue_size=1000, max_export_batch_size=2, schedule_delay_ms=60_000)
    em.emit_burst(25)
    c = em.stop(timeout_s=10)
    assert c.traces_dropped == 0 and c.traces_failed > 0 and c.traces_exported > 0
    assert c.export_failures == len([1 for _, ok in exp.calls if not ok])
    assert c.last_error == "exporter returned FAILURE"
    s = check_against_log(em, c)
    truth = exp.truth()
    assert {tid: state for tid, state, _ in s.iter_traces()} == truth


def test_exporter_exception_is_counted_not_raised(tmp_path: Path) -> None:
    class Boom(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            raise ConnectionError("collector went away")

    em = make(tmp_path, Boom(), schedule_delay_ms=10)
    assert em.emit_burst(10) == 10
    c = em.stop(timeout_s=10)
    assert c.traces_failed == 10 and c.spans_failed == 30
    assert c.last_error == "ConnectionError: collector went away"
    check_against_log(em, c)


def test_stop_deadline_counts_inflight_failed_and_queued_dropped(tmp_path: Path) -> None:
    exp = RecordingExporter()
    exp.gate.clear()  # the collector never answers
    em = make(tmp_path, exp, max_queue_size=30, max_export_batch_size=3, schedule_delay_ms=60_000)
    em.emit_burst(3)
    assert exp.entered.wait(5)  # trace 0's spans (the 3 oldest) are in flight
    t0 = time.monotonic()
    c = em.stop(timeout_s=0.3)
    assert time.monotonic() - t0 < 2.0
    assert (c.traces_failed, c.traces_dropped, c.traces_exported) == (1, 2, 0)
    assert c.last_error == "export still in flight at stop deadline"
    exp.gate.set()  # the late answer must not change the books
    assert em.counters() == c
    assert em.stop() == c  # idempotent
    assert em.emit_burst(5) == 0  # stopped: no-op, no raise
    s = check_against_log(em, c)
    assert [state for _, state, _ in s.iter_traces()] == ["failed", "dropped", "dropped"]


def test_background_rate_follows_schedule(tmp_path: Path) -> None:
    rate = 200.0
    em = make(tmp_path, RecordingExporter(), rate_per_s=rate, schedule_delay_ms=50)
    with em:
        deadline = time.monotonic() + 10
        while em.counters().traces_started < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
    c = em.counters()
    assert c.traces_started >= 60 and c.traces_exported == c.traces_started
    starts = [r["t"] for r in read_reference_log(em.log_path) if r["ev"] == "start"]
    mean = (starts[59] - starts[0]) / 59
    # An absolute schedule keeps the mean interval at 1/rate (a burst or sleep drift would not).
    assert 0.8 / rate < mean < 1.5 / rate, mean
    seqs = [r["seq"] for r in read_reference_log(em.log_path) if r["ev"] == "start"]
    assert seqs == list(range(len(seqs)))
    check_against_log(em, c)


def test_config_is_validated_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make(tmp_path, RecordingExporter(), max_queue_size=4, max_export_batch_size=8)
    with pytest.raises(ValueError):
        make(tmp_path, RecordingExporter(), rate_per_s=-1)
    assert not (tmp_path / "ref").exists()


def test_stop_without_start_is_empty(tmp_path: Path) -> None:
    em = make(tmp_path, RecordingExporter())
    assert em.stop() == EmitterCounters()
    with pytest.raises(RuntimeError):
        em.start()
