"""Accounting of every reference span: the exporter wrapper and the ledger behind one lock.

Each trace started ends up exported, failed or dropped exactly once (see loadgen.emitter), and
every change is streamed to the JSON-lines reference log in the same order.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from loadgen.emitter.counters import EmitterCounters, classify_trace
from loadgen.redact import redact_text

__all__ = ["AccountingExporter", "AccountingLedger", "short_error", "trace_hex"]

# Error strings go into the log and the report; keep them bounded.
_MAX_ERROR_LEN = 300
# Start records are flushed at least this often, so a crashed run still shows what it started.
_FLUSH_INTERVAL_S = 0.25


def trace_hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def short_error(text: str) -> str:
    """`text` bounded and without credentials (an exporter error may quote the endpoint URL)."""
    text = redact_text(text)
    return text if len(text) <= _MAX_ERROR_LEN else text[: _MAX_ERROR_LEN - 3] + "..."


@dataclass(slots=True)
class _Pending:
    """A trace whose spans are not all accounted for yet."""

    expected: int
    ok: int = 0
    failed: int = 0


class AccountingLedger:
    """Accounting state + the JSON-lines writer, behind one lock.

    One lock for both keeps the log order identical to the accounting order, and makes it safe for the
    generator thread (start records) and the batch-processor thread (export records) to write.

    Drop accounting without parsing SDK log lines: spans reach the exporter in the order they ended
    (the batch queue is FIFO and export calls are serialized), and traces are registered in the order
    their spans end. So once an export containing trace Y has completed, every trace registered before
    Y is final: whatever of it has not reached the exporter by now never will (it was dropped from the
    full queue). This keeps memory bounded by the queue, not by the run length.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a re-run into the same folder must never truncate an earlier run's evidence.
        self._file: IO[str] | None = path.open("a", encoding="utf-8")
        self._last_flush = time.monotonic()
        self.lock = threading.Lock()
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._inflight: dict[str, int] | None = None
        self.final = False
        self.traces_started = 0
        self.traces_exported = 0
        self.traces_failed = 0
        self.traces_dropped = 0
        self.spans_started = 0
        self.spans_exported = 0
        self.spans_failed = 0
        self.spans_dropped = 0
        self.export_calls = 0
        self.export_failures = 0
        self.emit_errors = 0
        self.schedule_resets = 0
        self.late_spans = 0
        self.last_error: str | None = None

    # -- writer (call with lock held) --------------------------------------------------------------

    def _write(self, record: dict[str, Any], *, flush: bool) -> None:
        if self._file is None:
            return
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            now = time.monotonic()
            if flush or now - self._last_flush >= _FLUSH_INTERVAL_S:
                self._file.flush()
                self._last_flush = now
        except (OSError, ValueError) as exc:  # disk full, closed file: count it, never raise
            self.emit_errors += 1
            self.last_error = short_error(f"reference log write failed: {exc!r}")

    def write_open(self, record: dict[str, Any]) -> None:
        with self.lock:
            self._write(record, flush=True)

    # -- accounting --------------------------------------------------------------------------------

    def register(self, trace_id: str, spans: int, seq: int) -> bool:
        """Record a started trace (before any of its spans ends). False once finalized."""
        with self.lock:
            if self.final:
                return False
            self._pending[trace_id] = _Pending(spans)
            self.traces_started += 1
            self.spans_started += spans
            self._write(
                {"ev": "start", "trace": trace_id, "spans": spans, "seq": seq, "t": time.time()}, flush=False
            )
            return True

    def note_error(self, message: str, *, emit: bool) -> None:
        with self.lock:
            if emit:
                self.emit_errors += 1
            self.last_error = short_error(message)

    def note_schedule_reset(self) -> None:
        with self.lock:
            self.schedule_resets += 1

    def begin_export(self, batch: dict[str, int]) -> bool:
        """Mark a batch as in flight. False once finalized: the caller must not send it."""
        with self.lock:
            if self.final:
                return False
            self._inflight = batch
            return True

    def finish_export(
        self, batch: dict[str, int], order: list[str], ok: bool, error: str | None, started: float
    ) -> None:
        """Apply one export result (``order`` = trace ids in the order their spans left the queue)."""
        with self.lock:
            if self.final:
                # stop() gave up on this call and already counted it failed; the late answer is moot.
                return
            self._inflight = None
            self._apply(batch, order, ok, error, started)

    def _apply(
        self, batch: dict[str, int], order: list[str], ok: bool, error: str | None, started: float
    ) -> None:
        self.export_calls += 1
        if not ok:
            self.export_failures += 1
            self.last_error = error
        for tid, count in batch.items():
            p = self._pending.get(tid)
            if p is None:
                # Not counted as exported/failed: the trace is already final, and the span totals
                # must keep summing to spans_started.
                self.late_spans += count
                continue
            if ok:
                p.ok += count
                self.spans_exported += count
            else:
                p.failed += count
                self.spans_failed += count
        # Everything registered before the newest trace in this batch can no longer reach export.
        if order and order[-1] in self._pending:
            newest = order[-1]
            while (oldest := next(iter(self._pending))) != newest:
                self._retire(oldest)
        for tid in order:
            p = self._pending.get(tid)
            if p is not None and p.ok + p.failed >= p.expected:
                self._retire(tid)
        self._write(
            {
                "ev": "export",
                "ok": ok,
                "t": time.time(),
                "dur_s": round(time.monotonic() - started, 6),
                "spans": batch,
                "error": error,
            },
            flush=True,
        )

    def _retire(self, tid: str) -> None:
        p = self._pending.pop(tid)
        state = classify_trace(p.expected, p.ok, p.failed)
        self.spans_dropped += max(0, p.expected - p.ok - p.failed)
        if state == "exported":
            self.traces_exported += 1
        elif state == "failed":
            self.traces_failed += 1
        else:
            self.traces_dropped += 1

    def finalize(self) -> EmitterCounters:
        """Close the books: an export still in flight counts as failed, everything else unexported is
        dropped. Writes the end record and closes the log. Idempotent."""
        with self.lock:
            if not self.final:
                if self._inflight is not None:
                    batch, self._inflight = self._inflight, None
                    self._apply(batch, [], False, "export still in flight at stop deadline", time.monotonic())
                while self._pending:
                    self._retire(next(iter(self._pending)))
                self.final = True
                counters = self._snapshot()
                self._write({"ev": "end", "t": time.time(), "counters": counters.as_dict()}, flush=True)
                if self._file is not None:
                    with contextlib.suppress(OSError):
                        self._file.close()
                    self._file = None
            return self._snapshot()

    def snapshot(self) -> EmitterCounters:
        with self.lock:
            return self._snapshot()

    def _snapshot(self) -> EmitterCounters:
        spans_done = self.spans_exported + self.spans_failed + self.spans_dropped
        return EmitterCounters(
            traces_started=self.traces_started,
            traces_exported=self.traces_exported,
            traces_failed=self.traces_failed,
            traces_dropped=self.traces_dropped,
            traces_pending=len(self._pending),
            spans_started=self.spans_started,
            spans_exported=self.spans_exported,
            spans_failed=self.spans_failed,
            spans_dropped=self.spans_dropped,
            spans_pending=self.spans_started - spans_done,
            export_calls=self.export_calls,
            export_failures=self.export_failures,
            emit_errors=self.emit_errors,
            schedule_resets=self.schedule_resets,
            late_spans=self.late_spans,
            last_error=self.last_error,
        )


class AccountingExporter(SpanExporter):
    """Wraps the real exporter: records each batch and its result, and never raises.

    The Zipkin exporter raises on connection errors (``requests``) and returns FAILURE on non-2xx; the
    OTLP exporters retry what their protocol calls retryable and then return FAILURE. Each becomes a
    failed export here, because telemetry must never raise into the run.
    """

    def __init__(self, inner: SpanExporter, ledger: AccountingLedger) -> None:
        self._inner = inner
        self._ledger = ledger
        # The SDK already serializes export calls; our own lock makes the FIFO drop accounting
        # independent of that implementation detail.
        self._serial = threading.Lock()
        self._last_note: str | None = None

    def note_failure(self, text: str) -> None:
        """Why the export in progress failed (an HTTP status, a gRPC status, a connection error), as
        the transport saw it: the exporters return a bare FAILURE. The last note of a failed export
        becomes its error."""
        self._last_note = short_error(text)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._serial:
            batch: dict[str, int] = {}
            order: list[str] = []
            for span in spans:
                ctx = span.context
                if ctx is None:
                    continue
                tid = trace_hex(ctx.trace_id)
                if tid not in batch:
                    batch[tid] = 0
                    order.append(tid)
                batch[tid] += 1
            if not self._ledger.begin_export(batch):
                return SpanExportResult.FAILURE
            started = time.monotonic()
            self._last_note = None
            error: str | None = None
            try:
                result = self._inner.export(spans)
            except Exception as exc:  # any exporter failure is data, not a crash
                result = SpanExportResult.FAILURE
                error = short_error(f"{type(exc).__name__}: {exc}")
            ok = result is SpanExportResult.SUCCESS
            if not ok and error is None:
                error = self._last_note or "exporter returned FAILURE"
            self._ledger.finish_export(batch, order, ok, error, started)
            return result

    def shutdown(self) -> None:
        try:
            self._inner.shutdown()
        except Exception as exc:
            self._ledger.note_error(f"exporter shutdown failed: {exc!r}", emit=False)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
