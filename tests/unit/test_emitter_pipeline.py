"""The side-emitter's parallel export pipeline: every span accounted for exactly once when several
export calls are in flight, finish out of order, fail, overflow the queue or outlive stop().

The emitter runs the real SDK; in place of the protocol's encoder and senders it hands each batch to
an in-process exporter shared by the workers, so what was actually "sent" is known per call.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags

from loadgen.emitter import ReferenceEmitter, read_reference_log, summarize_reference_log
from loadgen.emitter.accounting import INFLIGHT_AT_STOP, AccountingLedger, trace_hex
from loadgen.emitter.pipeline import (
    ExporterSender,
    ExportPipeline,
    Transport,
    batch_counts,
    exporter_transport,
)
from tests.unit.test_emitter_accounting import check_against_log

A, B, C = "a" * 32, "b" * 32, "c" * 32


class ParallelExporter(SpanExporter):
    """Thread-safe; records each call's spans (by span id) and result in completion order. A call
    may be held (`hold`: call number -> event to wait for) and its outcome is programmable."""

    def __init__(self, outcome: Callable[[int], SpanExportResult] | None = None) -> None:
        self.outcome = outcome or (lambda call: SpanExportResult.SUCCESS)
        self.lock = threading.Lock()
        self.recorded = threading.Condition(self.lock)
        self.hold: dict[int, threading.Event] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.started = 0
        self.entered = threading.Semaphore(0)
        self.calls: list[tuple[int, list[tuple[str, int]], bool]] = []  # (call no., [(trace, span)], ok)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            call = self.started
            self.started += 1
        self.entered.release()
        self.gate.wait()
        if call in self.hold:
            self.hold[call].wait(10)
        ids = [(trace_hex(s.context.trace_id), s.context.span_id) for s in spans if s.context is not None]
        result = self.outcome(call)
        with self.lock:
            self.calls.append((call, ids, result is SpanExportResult.SUCCESS))
            self.recorded.notify_all()
        return result

    def wait_calls(self, n: int) -> bool:
        """Until ``n`` calls have finished (False after 10 s)."""
        with self.lock:
            return self.recorded.wait_for(lambda: len(self.calls) >= n, timeout=10)

    def truth(self, spans_per_trace: int = 3) -> dict[str, str]:
        """Per trace, the state implied by what this exporter was given (unseen traces absent)."""
        ok: Counter[str] = Counter()
        bad: Counter[str] = Counter()
        for _, ids, good in self.calls:
            (ok if good else bad).update(tid for tid, _ in ids)
        return {
            tid: "failed" if bad[tid] else ("exported" if ok[tid] == spans_per_trace else "dropped")
            for tid in set(ok) | set(bad)
        }

    def span_ids(self) -> list[int]:
        return [sid for _, ids, _ in self.calls for _, sid in ids]


def make(tmp_path: Path, exporter: SpanExporter, **kw: Any) -> ReferenceEmitter:
    kw.setdefault("rate_per_s", 0)
    return ReferenceEmitter(
        "http://127.0.0.1:9", "run-par", tmp_path / "ref" / "reference.jsonl", exporter=exporter, **kw
    )


def test_calls_finishing_out_of_order_are_each_accounted_once(tmp_path: Path) -> None:
    """Call 0 is held until calls 1-3 have finished: results arrive out of order, and some fail."""
    exp = ParallelExporter(
        lambda call: SpanExportResult.FAILURE if call % 3 == 2 else SpanExportResult.SUCCESS
    )
    exp.hold[0] = threading.Event()
    em = make(
        tmp_path,
        exp,
        export_workers=4,
        max_export_batch_size=4,
        max_queue_size=1000,
        schedule_delay_ms=60_000,
    )
    assert em.export_workers == 4
    assert em.emit_burst(40) == 40  # 120 spans, 30 calls of 4
    assert exp.wait_calls(3)  # calls 1-3 finish while call 0 is held
    exp.hold[0].set()
    c = em.stop(timeout_s=20)
    finished = [call for call, _, _ in exp.calls]
    assert finished[0] != 0 and sorted(finished) == list(range(30))  # out of order, each call once
    assert (c.traces_started, c.spans_started, c.export_calls) == (40, 120, 30)
    assert c.traces_dropped == 0 and c.traces_failed > 0 and c.traces_exported > 0
    assert c.export_failures == sum(1 for _, _, ok in exp.calls if not ok) == 10
    sent = exp.span_ids()
    assert len(sent) == len(set(sent)) == 120  # no span in two calls, none missing
    s = check_against_log(em, c)
    assert {tid: state for tid, state, _ in s.iter_traces()} == exp.truth()


def test_seeded_random_failures_with_parallel_workers_match_the_exporter(tmp_path: Path) -> None:
    rng = random.Random(15)
    verdicts = [rng.random() < 0.3 for _ in range(200)]  # drawn up front: the call order decides
    exp = ParallelExporter(
        lambda call: SpanExportResult.FAILURE if verdicts[call] else SpanExportResult.SUCCESS
    )
    em = make(
        tmp_path, exp, export_workers=3, max_export_batch_size=5, max_queue_size=10_000, schedule_delay_ms=20
    )
    assert em.emit_burst(300) == 300
    c = em.stop(timeout_s=20)
    assert c.spans_started == 900 and c.spans_dropped == 0
    assert c.spans_exported + c.spans_failed == 900 == len(set(exp.span_ids()))
    assert c.export_failures == verdicts[: c.export_calls].count(True) > 0
    s = check_against_log(em, c)
    assert {tid: state for tid, state, _ in s.iter_traces()} == exp.truth()


def test_full_queue_with_every_worker_held_drops_the_rest_exactly(tmp_path: Path) -> None:
    exp = ParallelExporter()
    exp.gate.clear()  # every call blocks: up to 3 workers hold a batch each, the queue fills
    em = make(
        tmp_path, exp, export_workers=3, max_queue_size=6, max_export_batch_size=3, schedule_delay_ms=60_000
    )
    assert em.emit_burst(30) == 30
    assert exp.entered.acquire(timeout=10)
    exp.gate.set()
    c = em.stop(timeout_s=20)
    assert (c.traces_started, c.spans_started, c.traces_failed) == (30, 90, 0)
    # Room for 6 queued spans plus one 3-span batch per worker: at least 90 - 15 dropped, and
    # whole batches only (a batch is 3 spans: one trace).
    assert c.spans_dropped >= 90 - 6 - 3 * 3 and c.spans_dropped % 3 == 0
    assert c.spans_exported == 90 - c.spans_dropped == len(exp.span_ids())
    s = check_against_log(em, c)
    truth = exp.truth()
    for tid, state, _ in s.iter_traces():
        assert state == truth.get(tid, "dropped"), tid


def test_stop_deadline_fails_every_call_in_flight_and_drops_the_queue(tmp_path: Path) -> None:
    exp = ParallelExporter()
    exp.gate.clear()  # the collector never answers
    em = make(
        tmp_path, exp, export_workers=3, max_queue_size=30, max_export_batch_size=3, schedule_delay_ms=60_000
    )
    em.emit_burst(10)
    for _ in range(3):  # traces 0-2 (one batch each) are in flight on the three workers
        assert exp.entered.acquire(timeout=10)
    c = em.stop(timeout_s=0.3)
    assert (c.traces_failed, c.traces_dropped, c.traces_exported) == (3, 7, 0)
    assert (c.export_calls, c.export_failures) == (3, 3)
    assert c.last_error == INFLIGHT_AT_STOP
    exp.gate.set()  # the late answers must not change the books
    assert em.counters() == c and em.stop() == c
    s = check_against_log(em, c)
    assert [state for _, state, _ in s.iter_traces()] == ["failed"] * 3 + ["dropped"] * 7


def test_one_exporter_given_is_used_by_one_worker_unless_asked(tmp_path: Path) -> None:
    assert make(tmp_path, ParallelExporter()).export_workers == 1
    with pytest.raises(ValueError):
        make(tmp_path, ParallelExporter(), export_workers=0)


# --------------------------------------------------------------------------------------------------
# The pipeline and the ledger on their own
# --------------------------------------------------------------------------------------------------


def soon() -> float:
    """A monotonic deadline 10 s away: nothing here should need it."""
    return time.monotonic() + 10


def span(trace_id: int, span_id: int) -> ReadableSpan:
    return ReadableSpan(
        name="s",
        context=SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED)),
        resource=Resource({}),
    )


def pipeline(tmp_path: Path, transport: Transport, **kw: Any) -> tuple[ExportPipeline, AccountingLedger]:
    ledger = AccountingLedger(tmp_path / "reference.jsonl")
    kw.setdefault("max_queue_size", 100)
    kw.setdefault("max_batch", 2)
    kw.setdefault("schedule_delay_s", 60.0)
    return ExportPipeline(transport, ledger, **kw), ledger


def test_spans_ending_after_close_are_dropped_once(tmp_path: Path) -> None:
    exp = ParallelExporter()
    pipe, ledger = pipeline(tmp_path, exporter_transport([ExporterSender(exp)] * 2))
    assert ledger.register(trace_hex(1), 3, 0)
    pipe.on_end(span(1, 1))
    pipe.on_end(span(1, 2))  # a full batch of 2: sent
    pipe.close(soon())
    pipe.on_end(span(1, 3))  # the trace's last span ends after close: dropped, counted now
    live = ledger.snapshot()
    assert (live.spans_exported, live.spans_dropped, live.traces_dropped, live.traces_pending) == (2, 1, 1, 0)
    c = ledger.finalize()
    assert c == live and c.late_spans == 0
    assert pipe.join(soon())  # closed: the workers are gone


def test_an_encoder_that_raises_fails_its_batch_and_never_raises(tmp_path: Path) -> None:
    def encode(spans: Sequence[ReadableSpan]) -> object:
        raise RuntimeError("cannot encode")

    sent: list[object] = []

    class Sink:
        def send(self, payload: Any) -> str | None:
            sent.append(payload)
            return None

        def close(self) -> None:
            pass

    pipe, ledger = pipeline(tmp_path, Transport(encode, [Sink()]))
    assert ledger.register(trace_hex(7), 2, 0)
    pipe.on_end(span(7, 1))
    pipe.on_end(span(7, 2))
    pipe.close(soon())
    c = ledger.finalize()
    assert (c.traces_failed, c.spans_failed, c.export_calls, c.export_failures) == (1, 2, 1, 1)
    assert c.last_error == "encoding failed: RuntimeError: cannot encode"
    assert sent == []


def test_a_partial_batch_is_sent_after_the_schedule_delay(tmp_path: Path) -> None:
    exp = ParallelExporter()
    pipe, ledger = pipeline(
        tmp_path, exporter_transport([ExporterSender(exp)]), max_batch=50, schedule_delay_s=0.05
    )
    assert ledger.register(trace_hex(3), 1, 0)
    pipe.on_end(span(3, 1))
    assert exp.entered.acquire(timeout=10)  # no flush, no close: the delay alone sends it
    pipe.close(soon())
    assert ledger.finalize().traces_exported == 1


def test_batch_counts_by_trace_in_first_seen_order() -> None:
    spans = [span(2, 1), span(1, 2), span(2, 3)]
    assert list(batch_counts(spans).items()) == [(trace_hex(2), 2), (trace_hex(1), 1)]


def test_ledger_applies_results_in_any_order_and_fails_what_is_in_flight(tmp_path: Path) -> None:
    ledger = AccountingLedger(tmp_path / "reference.jsonl")
    for seq, tid in enumerate((A, B, C)):
        assert ledger.register(tid, 2, seq)
    assert ledger.begin_export(1, {A: 2})
    assert ledger.begin_export(2, {B: 1, C: 1})
    assert ledger.begin_export(3, {B: 1})
    ledger.finish_export(3, True, None, 0.0)  # the newest call finishes first
    assert ledger.snapshot().traces_pending == 3  # B still has a span in call 2
    ledger.finish_export(1, False, "HTTP 503: busy", 0.0)
    ledger.drop({C: 1})
    c = ledger.finalize()  # call 2 is still in flight: failed
    assert (c.traces_exported, c.traces_failed, c.traces_dropped) == (0, 3, 0)
    assert (c.spans_exported, c.spans_failed, c.spans_dropped) == (1, 4, 1)
    assert c.export_calls == 3 and c.late_spans == 0 and c.last_error == INFLIGHT_AT_STOP
    ledger.finish_export(2, True, None, 0.0)  # its late answer changes nothing
    ledger.drop({A: 1})
    assert ledger.snapshot() == c
    records = list(read_reference_log(tmp_path / "reference.jsonl"))
    s = summarize_reference_log(records)
    assert (s.started, s.exported, s.failed, s.dropped) == (3, 0, 3, 0)
    assert (s.spans_exported, s.spans_failed, s.spans_dropped) == (1, 4, 1)


def test_ledger_counts_a_span_accounted_twice_as_late(tmp_path: Path) -> None:
    ledger = AccountingLedger(tmp_path / "reference.jsonl")
    assert ledger.register(A, 1, 0)
    assert ledger.begin_export(1, {A: 1})
    ledger.finish_export(1, True, None, 0.0)
    ledger.drop({A: 1})  # the trace is final: a second account of its span is flagged, not counted
    c = ledger.finalize()
    assert (c.traces_exported, c.spans_exported, c.spans_dropped, c.late_spans) == (1, 1, 0, 1)
