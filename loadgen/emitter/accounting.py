"""Accounting of every reference span: the ledger behind one lock.

Each trace started ends up exported, failed or dropped exactly once (see loadgen.emitter), and
every change is streamed to the JSON-lines reference log in the same order.

Every span is accounted for by name, never inferred: the export pipeline (loadgen.emitter.pipeline)
tells the ledger which spans each export call carried and how it ended, and which spans it threw
away (a full queue, or spans that ended after it closed). So export calls may run in parallel and
finish in any order.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from loadgen.emitter.counters import EmitterCounters, classify_trace
from loadgen.redact import redact_text

__all__ = ["AccountingLedger", "short_error", "trace_hex"]

# Error strings go into the log and the report; keep them bounded.
_MAX_ERROR_LEN = 300
# Start records are flushed at least this often, so a crashed run still shows what it started.
_FLUSH_INTERVAL_S = 0.25
# The export record of a call still in flight when the books closed.
INFLIGHT_AT_STOP = "export still in flight at stop deadline"


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
    dropped: int = 0


class AccountingLedger:
    """Accounting state + the JSON-lines writer, behind one lock.

    One lock for both keeps the log order identical to the accounting order, and makes it safe for
    the generator thread (start records) and the export workers (export records) to write.

    A trace stays pending until each of its spans is exported, failed or dropped; then it is final
    and leaves memory, so memory is bounded by the spans in the pipeline, not by the run length.
    Export calls are known by an id (`begin_export`), so several may be in flight at once; when
    the books close (`finalize`) every call still in flight is failed and every span not yet
    accounted for is dropped.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Append: a re-run into the same folder must never truncate an earlier run's evidence.
        self._file: IO[str] | None = path.open("a", encoding="utf-8")
        self._last_flush = time.monotonic()
        self.lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._inflight: dict[int, Mapping[str, int]] = {}
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

    def _write_line(self, line: str, *, flush: bool) -> None:
        if self._file is None:
            return
        try:
            self._file.write(line)
            now = time.monotonic()
            if flush or now - self._last_flush >= _FLUSH_INTERVAL_S:
                self._file.flush()
                self._last_flush = now
        except (OSError, ValueError) as exc:  # disk full, closed file: count it, never raise
            self.emit_errors += 1
            self.last_error = short_error(f"reference log write failed: {exc!r}")

    def _write(self, record: dict[str, Any], *, flush: bool) -> None:
        self._write_line(json.dumps(record, separators=(",", ":")) + "\n", flush=flush)

    def write_open(self, record: dict[str, Any]) -> None:
        with self.lock:
            self._write(record, flush=True)

    # -- accounting --------------------------------------------------------------------------------

    def register(self, trace_id: str, spans: int, seq: int) -> bool:
        """Record a started trace (before any of its spans ends). False once finalized.

        ``trace_id`` is 32 lowercase hex digits (`trace_hex`)."""
        with self.lock:
            if self.final:
                return False
            self._pending[trace_id] = _Pending(spans)
            self.traces_started += 1
            self.spans_started += spans
            # The record json.dumps would write, without its cost (one per trace): the id is hex,
            # the counts are ints and repr() of a float is JSON.
            self._write_line(
                f'{{"ev":"start","trace":"{trace_id}","spans":{spans:d},"seq":{seq:d},"t":{time.time()!r}}}\n',
                flush=False,
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

    def begin_export(self, call: int, batch: Mapping[str, int]) -> bool:
        """Mark export call ``call`` (``batch``: trace id -> its spans in the call) as in flight.
        False once finalized: the caller must not send it."""
        with self.lock:
            if self.final:
                return False
            self._inflight[call] = batch
            return True

    def finish_export(self, call: int, ok: bool, error: str | None, started: float) -> None:
        """Apply the result of export call ``call`` (``started``: its monotonic start)."""
        with self.lock:
            batch = self._inflight.pop(call, None)
            if batch is None:
                # stop() gave up on this call and already counted it failed; the late answer is moot.
                return
            self._apply(batch, ok, error, started)

    def export_failed_unsent(self, batch: Mapping[str, int], error: str) -> None:
        """An export call that failed before anything was sent (the encoder raised)."""
        with self.lock:
            if not self.final:
                self._apply(batch, False, error, time.monotonic())

    def drop(self, batch: Mapping[str, int]) -> None:
        """Spans that will never reach an export call (a full queue, or they ended after the
        pipeline closed). Ignored once finalized: the books already count them dropped."""
        with self.lock:
            if self.final:
                return
            for tid, count in batch.items():
                p = self._pending.get(tid)
                if p is None:
                    self.late_spans += count
                    continue
                p.dropped += count
                self.spans_dropped += count
                if p.ok + p.failed + p.dropped >= p.expected:
                    self._retire(tid)

    def _apply(self, batch: Mapping[str, int], ok: bool, error: str | None, started: float) -> None:
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
            if p.ok + p.failed + p.dropped >= p.expected:
                self._retire(tid)
        self._write(
            {
                "ev": "export",
                "ok": ok,
                "t": time.time(),
                "dur_s": round(time.monotonic() - started, 6),
                "spans": dict(batch),
                "error": error,
            },
            flush=True,
        )

    def _retire(self, tid: str) -> None:
        p = self._pending.pop(tid)
        # Spans never accounted for (only when the books close) were lost: dropped.
        self.spans_dropped += max(0, p.expected - p.ok - p.failed - p.dropped)
        state = classify_trace(p.expected, p.ok, p.failed)
        if state == "exported":
            self.traces_exported += 1
        elif state == "failed":
            self.traces_failed += 1
        else:
            self.traces_dropped += 1

    def finalize(self) -> EmitterCounters:
        """Close the books: every export still in flight counts as failed, everything else not yet
        accounted for is dropped. Writes the end record and closes the log. Idempotent."""
        with self.lock:
            if not self.final:
                for call in sorted(self._inflight):
                    self._apply(self._inflight[call], False, INFLIGHT_AT_STOP, time.monotonic())
                self._inflight.clear()
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
