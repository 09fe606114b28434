"""The side-emitter's span processor: batches encoded as they fill, sent by several workers at once.

The OpenTelemetry SDK's BatchSpanProcessor queues span objects and exports one batch at a time,
waiting for each answer; measured (bench/emitter.py) it left the emitter idle while the collector
parsed a batch, and a burst's queued spans made Python's cyclic garbage collector rescan tens of
thousands of live span objects, doubling the cost of creating one. `ExportPipeline` instead:

* collects ended spans into a batch (``max_batch`` spans, or whatever is there after
  ``schedule_delay_s``);
* encodes a full batch at once, in the thread that filled it, with the real OpenTelemetry encoder
  (the `Transport`'s ``encode``), so the queue holds bytes, not spans;
* queues at most ``max_queue_size`` encoded spans; a batch that does not fit is dropped whole;
* sends with ``len(transport.senders)`` workers, each with its own exporter and connection, so one
  batch is sent while the next is encoded and another is parsed by the collector.

Every span is accounted for by name (loadgen.emitter.accounting): each export call with the spans
it carried and its result, each dropped batch, and on `close` what was still queued (dropped) or in
flight (failed, by the ledger's finalize). No span is in two calls, or in a call and dropped.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from loadgen.emitter.accounting import AccountingLedger, short_error, trace_hex

__all__ = [
    "ExportPipeline",
    "ExporterSender",
    "Notes",
    "Sender",
    "Transport",
    "batch_counts",
    "exporter_transport",
]


class Sender(Protocol):
    """Sends one encoded batch. One per worker: never called from two threads at once."""

    def send(self, payload: Any) -> str | None:
        """None when the collector accepted the batch, else why not (never raises)."""

    def close(self) -> None:
        """Release the connection (an export in flight may then fail)."""


@dataclass(frozen=True, slots=True)
class Transport:
    """How batches are encoded (``encode``: spans -> payload, called by whichever thread seals a
    batch, possibly several at once) and the senders, one per export worker."""

    encode: Callable[[Sequence[ReadableSpan]], Any]
    senders: Sequence[Sender]


def _as_list(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    return list(spans)


class Notes:
    """Why the export in progress failed, as the transport saw it (an HTTP status and body, a gRPC
    status, a connection error): the exporters return a bare FAILURE and only log the cause. One
    per sender, so parallel workers never read each other's reason."""

    def __init__(self) -> None:
        self.last: str | None = None

    def note(self, text: str) -> None:
        self.last = text


class ExporterSender:
    """A SpanExporter as a sender: the payload is the spans themselves (`exporter_transport`),
    exported by ``exporter.export``. ``notes`` hears why a call failed, if the exporter tells it."""

    def __init__(self, exporter: SpanExporter, notes: Notes | None = None) -> None:
        self.exporter = exporter
        self.notes = notes or Notes()

    def send(self, payload: Any) -> str | None:
        self.notes.last = None
        try:
            result = self.exporter.export(payload)
        except Exception as exc:  # any exporter failure is data, not a crash
            return f"{type(exc).__name__}: {exc}"
        if result is SpanExportResult.SUCCESS:
            return None
        return self.notes.last or "exporter returned FAILURE"

    def close(self) -> None:
        self.exporter.shutdown()


def exporter_transport(senders: Sequence[ExporterSender]) -> Transport:
    """Batches handed to SpanExporters as they are (no early encoding): each exporter encodes its
    own. The same sender may be given several times (one exporter shared by several workers) only
    if its exporter is thread-safe."""
    return Transport(_as_list, senders)


def batch_counts(spans: Sequence[ReadableSpan]) -> dict[str, int]:
    """Trace id (hex) -> how many of ``spans`` belong to it, in the order the traces first appear."""
    counts = Counter(s.context.trace_id for s in spans if s.context is not None)
    return {trace_hex(tid): n for tid, n in counts.items()}


@dataclass(slots=True)
class _Job:
    """A sealed, encoded batch waiting for (or in) an export call."""

    call: int
    payload: Any
    counts: dict[str, int]
    spans: int


@dataclass(slots=True)
class _State:
    """Everything the lock guards."""

    batch: list[ReadableSpan] = field(default_factory=list)
    batch_t0: float = 0.0  # monotonic time the batch's first span ended
    jobs: deque[_Job] = field(default_factory=deque)
    queued: int = 0  # spans sealed and waiting: encoding, or in `jobs`
    inflight: int = 0  # export calls being sent
    calls: int = 0  # export calls numbered so far
    closing: bool = False  # no new spans; what is there is still sent
    closed: bool = False  # nothing more is sent


class ExportPipeline(SpanProcessor):
    """A span processor that encodes full batches and sends them with parallel workers.

    Register it on the TracerProvider; `close` (not the provider's shutdown) ends it within a
    deadline. The ledger is told of every span that reaches it."""

    def __init__(
        self,
        transport: Transport,
        ledger: AccountingLedger,
        *,
        max_queue_size: int,
        max_batch: int,
        schedule_delay_s: float,
    ) -> None:
        if not transport.senders:
            raise ValueError("an export pipeline needs at least one sender")
        self._encode = transport.encode
        self._senders = list(transport.senders)
        self._ledger = ledger
        self._max_queue = max_queue_size
        self._max_batch = max_batch
        self._delay_s = schedule_delay_s
        # on_end takes the lock itself (once per span: a Lock's C context manager, not Condition's).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._s = _State()
        self._workers = [
            threading.Thread(
                target=self._work, args=(sender,), name=f"loadgen-reference-export-{i}", daemon=True
            )
            for i, sender in enumerate(self._senders)
        ]
        for worker in self._workers:
            worker.start()

    # -- the SDK's side ----------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        s = self._s
        with self._lock:
            if s.closing:
                full: list[ReadableSpan] | None = None
            else:
                s.batch.append(span)
                if len(s.batch) == 1:
                    s.batch_t0 = time.monotonic()
                if len(s.batch) < self._max_batch:
                    return
                full, s.batch = s.batch, []
        if full is None:
            self._ledger.drop(batch_counts([span]))
        else:
            self._seal(full)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what is batched and queued; True once every export call has finished."""
        return self._drain(time.monotonic() + timeout_millis / 1000)

    def shutdown(self) -> None:
        """The provider's shutdown: `close` with the default deadline (idempotent)."""
        self.close(time.monotonic() + 30.0)

    # -- sealing and sending -----------------------------------------------------------------------

    def _seal(self, spans: list[ReadableSpan]) -> None:
        """Encode a batch and queue it for a worker, or drop it when the queue has no room."""
        counts = batch_counts(spans)
        n = len(spans)
        with self._cond:
            room = not self._s.closed and self._s.queued + n <= self._max_queue
            if room:
                self._s.queued += n  # reserved now, so concurrent sealers respect the bound
        if not room:
            self._ledger.drop(counts)
            return
        try:
            payload = self._encode(spans)
        except Exception as exc:  # an encoder bug fails the batch; it never raises into the SDK
            with self._cond:
                self._s.queued -= n
                self._cond.notify_all()
            self._ledger.export_failed_unsent(
                counts, short_error(f"encoding failed: {type(exc).__name__}: {exc}")
            )
            return
        with self._cond:
            if self._s.closed:
                self._s.queued -= n
                dropped = True
            else:
                self._s.calls += 1
                self._s.jobs.append(_Job(self._s.calls, payload, counts, n))
                dropped = False
            self._cond.notify_all()
        if dropped:
            self._ledger.drop(counts)

    def _next(self) -> _Job | list[ReadableSpan] | None:
        """A job to send, a due partial batch to seal, or None when the pipeline is closed."""
        s = self._s
        with self._cond:
            while True:
                if s.closed:
                    return None
                if s.jobs:
                    job = s.jobs.popleft()
                    s.queued -= job.spans
                    s.inflight += 1
                    return job
                wait = self._delay_s
                if s.batch:
                    wait = s.batch_t0 + self._delay_s - time.monotonic()
                    if wait <= 0 or s.closing:
                        partial, s.batch = s.batch, []
                        return partial
                self._cond.wait(wait)

    def _work(self, sender: Sender) -> None:
        while (item := self._next()) is not None:
            if isinstance(item, list):
                self._seal(item)
                continue
            try:
                if self._ledger.begin_export(item.call, item.counts):
                    started = time.monotonic()
                    error = sender.send(item.payload)
                    if error is not None:
                        error = short_error(error)
                    self._ledger.finish_export(item.call, error is None, error, started)
            finally:
                with self._cond:
                    self._s.inflight -= 1
                    self._cond.notify_all()

    def _take_partial(self) -> list[ReadableSpan]:
        with self._cond:
            partial, self._s.batch = self._s.batch, []
        return partial

    def _drain(self, deadline: float) -> bool:
        """Seal the partial batch here and wait until nothing is queued or in flight (spans that
        end meanwhile start a new batch, which is not waited for)."""
        partial = self._take_partial()
        if partial:
            self._seal(partial)
        s = self._s
        with self._cond:
            while s.queued or s.inflight:
                left = deadline - time.monotonic()
                if left <= 0 or s.closed:
                    return False
                self._cond.wait(left)
            return True

    def close(self, deadline: float) -> None:
        """Stop taking spans (later ones are dropped), send what is there until ``deadline``
        (monotonic), then drop what is still queued. Export calls still in flight are left to the
        ledger's finalize (failed). Idempotent; returns by the deadline (plus one encode)."""
        with self._cond:
            if self._s.closed:
                return
            self._s.closing = True
        self._drain(deadline)
        with self._cond:
            self._s.closed = True
            leftover = list(self._s.jobs)
            self._s.jobs.clear()
            for job in leftover:
                self._s.queued -= job.spans
            self._cond.notify_all()
        for job in leftover:
            self._ledger.drop(job.counts)

    def close_senders(self) -> None:
        """Close every sender (after `close`); a failing close is noted, never raised."""
        for sender in dict.fromkeys(self._senders):  # a shared sender once
            try:
                sender.close()
            except Exception as exc:
                self._ledger.note_error(f"exporter shutdown failed: {exc!r}", emit=False)

    def join(self, deadline: float) -> bool:
        """Wait for the workers to exit (after `close`); False if one is still sending."""
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(w.is_alive() for w in self._workers)
