"""OpenTelemetry side-emitter: reference traces sent straight to the Zipkin collector.

Reference traces bypass the mesh, so "reference traces found in the backend / traces exported" is the
collector/backend's own collection rate. For that number to be defensible, every trace started is
accounted for exactly once:

    started = exported + failed + dropped

* ``exported`` - every span of the trace was in an export call the exporter reported as SUCCESS;
* ``failed``   - at least one span was in an export call that failed (non-2xx, connection error,
  exception, or still in flight when ``stop()`` gave up waiting);
* ``dropped``  - otherwise, at least one span ended but never reached the exporter (the batch queue
  was full, or it was lost at shutdown / when the process died).

The emitter streams a JSON-lines log (``reference.jsonl``) that the reconciler folds later with
:func:`summarize_reference_log`; the fold and the live :meth:`ReferenceEmitter.counters` agree exactly.

Log records (one JSON object per line)::

    {"ev":"open","t":...,"run_id":...,"service":...,"endpoint":...,"children":N,"rate_per_s":R}
    {"ev":"start","trace":"<32hex>","spans":N,"seq":S,"t":<epoch s>}
    {"ev":"export","ok":true|false,"t":...,"dur_s":...,"spans":{"<32hex>":count,...},"error":str|null}
    {"ev":"end","t":...,"counters":{...}}
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import requests
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, SpanKind, Tracer, set_span_in_context

from loadgen.ledger import parse_record
from loadgen.redact import redact_text, redact_url

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "AccountingExporter",
    "EmitterCounters",
    "ReferenceEmitter",
    "ReferenceSummary",
    "TraceOutcome",
    "TraceState",
    "read_reference_log",
    "summarize_reference_log",
    "zipkin_spans_url",
]

log = logging.getLogger(__name__)

DEFAULT_SERVICE_NAME = "loadgen-reference"
ZIPKIN_SPANS_PATH = "/api/v2/spans"
ROOT_SPAN_NAME = "reference"

TraceState = Literal["exported", "failed", "dropped"]

# Error strings go into the log and the report; keep them bounded.
_MAX_ERROR_LEN = 300
# If the generator falls this far behind its schedule (GC pause, suspended VM), restart the schedule
# instead of bursting to "catch up" - a burst would be load the user did not ask for.
_MAX_SCHEDULE_LAG_S = 1.0
# Start records are flushed at least this often, so a crashed run still shows what it started.
_FLUSH_INTERVAL_S = 0.25


def zipkin_spans_url(collector_url: str) -> str:
    """Zipkin v2 spans endpoint for a collector base URL (an URL already ending in it is kept)."""
    base = collector_url.rstrip("/")
    return base if base.endswith(ZIPKIN_SPANS_PATH) else base + ZIPKIN_SPANS_PATH


def _trace_hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def _short(text: str) -> str:
    """`text` bounded and without credentials (an exporter error may quote the endpoint URL)."""
    text = redact_text(text)
    return text if len(text) <= _MAX_ERROR_LEN else text[: _MAX_ERROR_LEN - 3] + "..."


def _classify(expected: int, ok: int, failed: int) -> TraceState:
    """Final state of one trace. A failed export outranks a drop: the collector saw trouble."""
    if ok >= expected:
        return "exported"
    if failed > 0:
        return "failed"
    return "dropped"


# --------------------------------------------------------------------------------------------------
# Counters
# --------------------------------------------------------------------------------------------------


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


@dataclass(slots=True)
class _Pending:
    """A trace whose spans are not all accounted for yet."""

    expected: int
    ok: int = 0
    failed: int = 0


# --------------------------------------------------------------------------------------------------
# Accounting exporter
# --------------------------------------------------------------------------------------------------


class _Ledger:
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
            self.last_error = _short(f"reference log write failed: {exc!r}")

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
            self.last_error = _short(message)

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
        state = _classify(p.expected, p.ok, p.failed)
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

    The Zipkin exporter raises on connection errors (``requests``) and returns FAILURE on non-2xx; both
    become a failed export here, because telemetry must never raise into the run.
    """

    def __init__(self, inner: SpanExporter, ledger: _Ledger) -> None:
        self._inner = inner
        self._ledger = ledger
        # The SDK already serializes export calls; our own lock makes the FIFO drop accounting
        # independent of that implementation detail.
        self._serial = threading.Lock()
        self._last_http: str | None = None

    def note_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """``requests`` response hook: remember the status so a FAILURE says *why*."""
        if response.status_code not in (200, 202):
            self._last_http = _short(f"HTTP {response.status_code}: {response.text.strip()}")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._serial:
            batch: dict[str, int] = {}
            order: list[str] = []
            for span in spans:
                ctx = span.context
                if ctx is None:
                    continue
                tid = _trace_hex(ctx.trace_id)
                if tid not in batch:
                    batch[tid] = 0
                    order.append(tid)
                batch[tid] += 1
            if not self._ledger.begin_export(batch):
                return SpanExportResult.FAILURE
            started = time.monotonic()
            self._last_http = None
            error: str | None = None
            try:
                result = self._inner.export(spans)
            except Exception as exc:  # any exporter failure is data, not a crash
                result = SpanExportResult.FAILURE
                error = _short(f"{type(exc).__name__}: {exc}")
            ok = result is SpanExportResult.SUCCESS
            if not ok and error is None:
                error = self._last_http or "exporter returned FAILURE"
            self._ledger.finish_export(batch, order, ok, error, started)
            return result

    def shutdown(self) -> None:
        try:
            self._inner.shutdown()
        except Exception as exc:
            self._ledger.note_error(f"exporter shutdown failed: {exc!r}", emit=False)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# --------------------------------------------------------------------------------------------------
# Emitter
# --------------------------------------------------------------------------------------------------


class ReferenceEmitter:
    """Generates reference traces at a steady rate and exports them to a Zipkin collector.

    After :meth:`start` nothing raises into the caller: failures are counted and logged.
    """

    def __init__(
        self,
        collector_url: str,
        run_id: str,
        log_path: str | Path,
        rate_per_s: float = 20.0,
        children: int = 2,
        service_name: str = DEFAULT_SERVICE_NAME,
        max_queue_size: int = 2048,
        schedule_delay_ms: float = 500,
        max_export_batch_size: int = 512,
        export_timeout_s: float = 5.0,
        *,
        exporter: SpanExporter | None = None,
    ) -> None:
        """``exporter`` replaces the Zipkin JSON exporter (tests, or another protocol); it is still
        wrapped by the accounting exporter."""
        # Validate here, before any thread exists, so bad config fails fast and loudly.
        if rate_per_s < 0:
            raise ValueError("rate_per_s must be >= 0 (0 = only emit_burst)")
        if children < 0:
            raise ValueError("children must be >= 0")
        if max_queue_size <= 0 or max_export_batch_size <= 0 or schedule_delay_ms <= 0:
            raise ValueError("max_queue_size, max_export_batch_size and schedule_delay_ms must be > 0")
        if max_export_batch_size > max_queue_size:
            raise ValueError("max_export_batch_size must be <= max_queue_size")
        if export_timeout_s <= 0:
            raise ValueError("export_timeout_s must be > 0")
        self.endpoint = zipkin_spans_url(collector_url)
        self.run_id = run_id
        self.log_path = Path(log_path)
        self.rate_per_s = float(rate_per_s)
        self.children = children
        self.service_name = service_name
        self.max_queue_size = max_queue_size
        self.schedule_delay_ms = schedule_delay_ms
        self.max_export_batch_size = max_export_batch_size
        self.export_timeout_s = export_timeout_s
        self._inner_exporter = exporter

        self._state_lock = threading.Lock()  # guards open/stop transitions
        # Held across creating and ending one trace, so traces end (and queue) in registration order.
        self._emit_lock = threading.Lock()
        self._ledger: _Ledger | None = None
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        self._thread: threading.Thread | None = None
        self._stop_evt = threading.Event()
        self._stopped = False
        self._final: EmitterCounters | None = None
        self._seq = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    def _open(self) -> bool:
        """Create the log, provider and exporter once. False if already stopped."""
        with self._state_lock:
            if self._stopped:
                return False
            if self._ledger is not None:
                return True
            ledger = _Ledger(self.log_path)
            if self._inner_exporter is not None:
                accounting = AccountingExporter(self._inner_exporter, ledger)
            else:
                session = requests.Session()
                zipkin = ZipkinExporter(
                    endpoint=self.endpoint,
                    # requests accepts a float timeout; the annotation says int.
                    timeout=self.export_timeout_s,  # type: ignore[arg-type]
                    session=session,
                )
                accounting = AccountingExporter(zipkin, ledger)
                # The exporter logs the HTTP status but returns a bare FAILURE; the hook keeps it.
                session.hooks["response"].append(accounting.note_response)
            provider = TracerProvider(
                resource=Resource.create({SERVICE_NAME: self.service_name}),
                # Explicit: OTEL_TRACES_SAMPLER must not thin out reference traces (unsampled spans
                # never reach the processor and would silently look "dropped").
                sampler=ALWAYS_ON,
                id_generator=RandomIdGenerator(),
                # We flush and shut down in stop(); an atexit hook could block exit on a dead collector.
                shutdown_on_exit=False,
            )
            provider.add_span_processor(
                BatchSpanProcessor(
                    accounting,
                    max_queue_size=self.max_queue_size,
                    schedule_delay_millis=self.schedule_delay_ms,
                    max_export_batch_size=self.max_export_batch_size,
                    # Ignored by the SDK's BatchProcessor (1.45: "no way to pass timeout to
                    # export"); the real bound is the exporter's HTTP timeout above.
                    export_timeout_millis=self.export_timeout_s * 1000,
                )
            )
            ledger.write_open(
                {
                    "ev": "open",
                    "t": time.time(),
                    "run_id": self.run_id,
                    "service": self.service_name,
                    "endpoint": redact_url(self.endpoint),
                    "children": self.children,
                    "rate_per_s": self.rate_per_s,
                }
            )
            self._ledger = ledger
            self._provider = provider
            # Not the global provider: the process may have its own tracing (or none).
            self._tracer = provider.get_tracer("loadgen.emitter")
            return True

    def start(self) -> ReferenceEmitter:
        """Open the log and exporter and start generating at ``rate_per_s`` in a background thread.

        Raises only before generation begins (e.g. the log file cannot be created)."""
        if not self._open():
            raise RuntimeError("emitter already stopped")
        with self._state_lock:
            if self._thread is None and self.rate_per_s > 0:
                self._thread = threading.Thread(
                    target=self._run, name="loadgen-reference-emitter", daemon=True
                )
                self._thread.start()
        return self

    def _run(self) -> None:
        # Absolute schedule (t0 + k/rate): sleep jitter does not accumulate into a lower rate.
        interval = 1.0 / self.rate_per_s
        next_t = time.monotonic()
        while not self._stop_evt.is_set():
            now = time.monotonic()
            if now < next_t:
                if self._stop_evt.wait(next_t - now):
                    break
                continue
            self._emit_one()
            next_t += interval
            if time.monotonic() - next_t > _MAX_SCHEDULE_LAG_S:
                next_t = time.monotonic()
                if self._ledger is not None:
                    self._ledger.note_schedule_reset()

    def emit_burst(self, n: int) -> int:
        """Start ``n`` traces as fast as possible in the calling thread. Returns how many started.

        Opens the emitter if needed (without the background generator); 0 after ``stop()``."""
        if n <= 0 or not self._open():
            return 0
        started = 0
        for _ in range(n):
            if self._stop_evt.is_set():  # stop() was called from another thread
                break
            started += self._emit_one()
        return started

    def _emit_one(self) -> bool:
        ledger, tracer = self._ledger, self._tracer
        if ledger is None or tracer is None:
            return False
        with self._emit_lock:
            seq = self._seq
            spans: list[Span] = []
            try:
                attrs: dict[str, str | int] = {"loadgen.run_id": self.run_id, "loadgen.ref_seq": seq}
                root = tracer.start_span(ROOT_SPAN_NAME, kind=SpanKind.SERVER, attributes=attrs)
                spans.append(root)
                ctx = root.get_span_context()
                if not ctx.is_valid:
                    # OTEL_SDK_DISABLED=true gives a no-op tracer: nothing would ever be exported.
                    ledger.note_error("OpenTelemetry SDK disabled: no reference traces", emit=True)
                    return False
                if not ledger.register(_trace_hex(ctx.trace_id), 1 + self.children, seq):
                    return False
                self._seq += 1
                parent = set_span_in_context(root)
                for i in range(self.children):
                    # Alternate CLIENT/INTERNAL so the backend shows both kinds, like a real hop.
                    kind = SpanKind.CLIENT if i % 2 == 0 else SpanKind.INTERNAL
                    child = tracer.start_span(
                        f"reference.child-{i}",
                        context=parent,
                        kind=kind,
                        attributes={**attrs, "loadgen.ref_child": i},
                    )
                    spans.append(child)
                    child.end()
                root.end()
                return True
            except Exception as exc:  # never raise into the load loop
                ledger.note_error(f"emit failed: {type(exc).__name__}: {exc}", emit=True)
                for s in spans:  # a span left open would never be exported nor accounted
                    try:
                        if s.is_recording():
                            s.end()
                    except Exception:
                        pass
                return False

    def stop(self, timeout_s: float = 10.0) -> EmitterCounters:
        """Stop generating, flush and shut down the exporter, write the end record, return counters.

        Returns within about ``timeout_s``: an export still in flight then is counted failed, spans
        still queued are counted dropped. Idempotent."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._state_lock:
            if self._final is not None:
                return self._final
            self._stopped = True
            self._stop_evt.set()
            thread, provider, ledger = self._thread, self._provider, self._ledger
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        if ledger is None or provider is None:  # never opened: nothing was started
            final = EmitterCounters()
        else:
            # force_flush ignores its timeout in SDK 1.45 and shutdown waits up to 30 s, so run them in
            # a helper thread and stop waiting at our own deadline.
            closer = threading.Thread(
                target=self._close_provider,
                args=(provider, ledger),
                name="loadgen-reference-shutdown",
                daemon=True,
            )
            closer.start()
            closer.join(max(0.0, deadline - time.monotonic()))
            if closer.is_alive():
                ledger.note_error(f"stop(): exporter did not finish within {timeout_s:g}s", emit=False)
            final = ledger.finalize()
        with self._state_lock:
            self._final = final
        return final

    @staticmethod
    def _close_provider(provider: TracerProvider, ledger: _Ledger) -> None:
        try:
            provider.force_flush()
            provider.shutdown()
        except Exception as exc:
            ledger.note_error(f"provider shutdown failed: {type(exc).__name__}: {exc}", emit=False)

    def counters(self) -> EmitterCounters:
        """A consistent snapshot of the counters (final ones after stop)."""
        if self._final is not None:
            return self._final
        ledger = self._ledger
        return ledger.snapshot() if ledger is not None else EmitterCounters()

    def __enter__(self) -> ReferenceEmitter:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# Reading the log back
# --------------------------------------------------------------------------------------------------


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
    traces = s.traces
    for rec in lines:
        t = rec.get("t")
        if isinstance(t, int | float):
            if s.first_t is None or t < s.first_t:
                s.first_t = float(t)
            if s.last_t is None or t > s.last_t:
                s.last_t = float(t)
        ev = rec.get("ev")
        if ev == "start":
            tid = str(rec["trace"])
            if tid in traces:
                continue  # a duplicated line must not double-count
            n = int(rec["spans"])
            seq = rec.get("seq")
            traces[tid] = TraceOutcome(
                "dropped",
                n,
                t=float(t) if isinstance(t, int | float) else None,
                seq=int(seq) if isinstance(seq, int) else None,
            )
            s.started += 1
            s.spans_started += n
        elif ev == "export":
            ok = bool(rec.get("ok"))
            s.export_calls += 1
            if not ok:
                s.export_failures += 1
            for tid, count in dict(rec.get("spans") or {}).items():
                o = traces.get(tid)
                if o is None:
                    s.orphan_spans += int(count)
                elif ok:
                    o.exported_spans += int(count)
                else:
                    o.failed_spans += int(count)
        elif ev == "open":
            s.run_id = rec.get("run_id") if s.run_id is None else s.run_id
        elif ev == "end":
            s.complete = True
            counters = rec.get("counters")
            s.end_counters = dict(counters) if isinstance(counters, dict) else None
    for o in traces.values():
        o.state = _classify(o.spans, o.exported_spans, o.failed_spans)
        if o.state == "exported":
            s.exported += 1
        elif o.state == "failed":
            s.failed += 1
        else:
            s.dropped += 1
        s.spans_exported += o.exported_spans
        s.spans_failed += o.failed_spans
        s.spans_dropped += max(0, o.spans - o.exported_spans - o.failed_spans)
    return s


def read_reference_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a reference log; a torn last line (process killed mid-write) or any line that is
    not a UTF-8 JSON object is skipped."""
    with Path(path).open("rb") as f:
        for line in f:
            rec = parse_record(line) if line.strip() else None
            if rec is not None:
                yield rec
