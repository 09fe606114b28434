"""The reference-trace generator: a steady rate of OpenTelemetry traces sent to the collector by
Zipkin JSON, OTLP/HTTP or OTLP/gRPC (loadgen.emitter.protocols), through the export pipeline
(loadgen.emitter.pipeline: batches encoded as they fill, sent by parallel workers)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Span, SpanKind, Tracer, set_span_in_context

from loadgen.emitter.accounting import AccountingLedger, trace_hex
from loadgen.emitter.counters import EmitterCounters
from loadgen.emitter.pipeline import ExporterSender, ExportPipeline, Transport, exporter_transport
from loadgen.emitter.protocols import (
    ZIPKIN_SPANS_PATH,
    ReferenceProtocol,
    reference_target,
    zipkin_spans_url,
)
from loadgen.emitter.transports import DEFAULT_EXPORT_WORKERS, build_transport

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "ROOT_SPAN_NAME",
    "ZIPKIN_SPANS_PATH",
    "ReferenceEmitter",
    "zipkin_spans_url",
]

DEFAULT_SERVICE_NAME = "loadgen-reference"
ROOT_SPAN_NAME = "reference"

# If the generator falls this far behind its schedule (GC pause, suspended VM), restart the schedule
# instead of bursting to "catch up" - a burst would be load the user did not ask for.
_MAX_SCHEDULE_LAG_S = 1.0


class ReferenceEmitter:
    """Generates reference traces at a steady rate and exports them to the collector.

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
        protocol: str = ReferenceProtocol.ZIPKIN,
        grpc_endpoint: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        exporter: SpanExporter | None = None,
        export_workers: int | None = None,
    ) -> None:
        """``protocol`` picks the exporter (zipkin, otlp-http, otlp-grpc; ``grpc_endpoint`` is
        otlp-grpc's HOST:PORT, else the collector's host on 4317: see `reference_target`).
        ``headers`` go with every export (OTEL_EXPORTER_OTLP_HEADERS).

        ``export_workers`` batches are sent at once, each worker on its own connection (default
        `DEFAULT_EXPORT_WORKERS`). ``exporter`` replaces the protocol's encoder and senders: it is
        handed each batch of spans; with more than one worker (default 1 then) it must be
        thread-safe. Either way every span is accounted for (loadgen.emitter.accounting)."""
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
        if export_workers is not None and export_workers < 1:
            raise ValueError("export_workers must be >= 1")
        self.target = reference_target(protocol, collector_url, grpc_endpoint, headers)
        self.protocol = self.target.protocol
        self.endpoint = self.target.endpoint  # no credentials: they travel as headers
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
        self.export_workers = export_workers or (1 if exporter is not None else DEFAULT_EXPORT_WORKERS)

        self._state_lock = threading.Lock()  # guards open/stop transitions
        # Held across creating and ending one trace, so seq numbers follow registration order.
        self._emit_lock = threading.Lock()
        self._ledger: AccountingLedger | None = None
        self._provider: TracerProvider | None = None
        self._pipeline: ExportPipeline | None = None
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
            transport = self._transport()
            ledger = AccountingLedger(self.log_path)
            pipeline = ExportPipeline(
                transport,
                ledger,
                max_queue_size=self.max_queue_size,
                max_batch=self.max_export_batch_size,
                schedule_delay_s=self.schedule_delay_ms / 1000,
            )
            provider = TracerProvider(
                resource=Resource.create({SERVICE_NAME: self.service_name}),
                # Explicit: OTEL_TRACES_SAMPLER must not thin out reference traces (unsampled spans
                # never reach the processor and would silently look "dropped").
                sampler=ALWAYS_ON,
                id_generator=RandomIdGenerator(),
                # We close the pipeline in stop(); an atexit hook could block exit on a dead collector.
                shutdown_on_exit=False,
            )
            provider.add_span_processor(pipeline)
            ledger.write_open(
                {
                    "ev": "open",
                    "t": time.time(),
                    "run_id": self.run_id,
                    "service": self.service_name,
                    "protocol": self.protocol.value,
                    "endpoint": self.target.shown,
                    "children": self.children,
                    "rate_per_s": self.rate_per_s,
                }
            )
            self._ledger = ledger
            self._provider = provider
            self._pipeline = pipeline
            # Not the global provider: the process may have its own tracing (or none).
            self._tracer = provider.get_tracer("loadgen.emitter")
            return True

    def _transport(self) -> Transport:
        if self._inner_exporter is not None:
            sender = ExporterSender(self._inner_exporter)
            return exporter_transport([sender] * self.export_workers)
        return build_transport(self.target, self.export_timeout_s, self.export_workers)

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
                if not ledger.register(trace_hex(ctx.trace_id), 1 + self.children, seq):
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
        """Stop generating, send what is queued, close the exporters, write the end record, return
        the counters.

        Returns within about ``timeout_s``: an export still in flight then is counted failed, spans
        still queued are counted dropped. Idempotent."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._state_lock:
            if self._final is not None:
                return self._final
            self._stopped = True
            self._stop_evt.set()
            thread, ledger, pipeline, provider = self._thread, self._ledger, self._pipeline, self._provider
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        if ledger is None or pipeline is None or provider is None:  # never opened: nothing was started
            final = EmitterCounters()
        else:
            # Bounded by the deadline: what is still queued then is dropped; calls still in flight
            # are failed by finalize, and their late answers ignored.
            pipeline.close(deadline)
            final = ledger.finalize()
            # Closing a connection may wait on it; not past our deadline.
            closer = threading.Thread(
                target=self._close_provider,
                args=(pipeline, provider),
                name="loadgen-reference-shutdown",
                daemon=True,
            )
            closer.start()
            closer.join(max(0.0, deadline - time.monotonic()))
        with self._state_lock:
            self._final = final
        return final

    @staticmethod
    def _close_provider(pipeline: ExportPipeline, provider: TracerProvider) -> None:
        pipeline.close_senders()
        with contextlib.suppress(Exception):  # the books are closed; nothing left to count
            provider.shutdown()

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
