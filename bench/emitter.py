"""Side-emitter throughput: loadgen's ReferenceEmitter vs the plain OpenTelemetry SDK pipeline.

    python bench/emitter.py [--quick] [--traces N] [--rounds R] [--workers W]
                            [--protocol zipkin|otlp-http|otlp-grpc]

Starts the embedded collector (`python -m loadgen.stack.collector`, stopped by PID), then in this
process, alternately (a, b, a, b, ...):

  (a) loadgen   `ReferenceEmitter(collector_url, run_id, log, rate_per_s=0, children=2)`
                `.emit_burst(N)` then `.stop()` - with its per-trace accounting and JSON-lines log;
  (b) plain SDK the same 3-span traces through TracerProvider + BatchSpanProcessor + ZipkinExporter
                (same queue/batch settings), with only a span counter on the exporter.

loadgen's emitter encodes each batch as it fills and sends with parallel workers
(loadgen.emitter.pipeline; --workers, default the emitter's own); the plain SDK exports one batch
at a time. In each round, before the pair, the one-process ceiling is measured on the same
traces: (c) the SDK creating them with nothing exported, and (d) creating them and encoding each
full batch with the protocol's real OpenTelemetry encoder, nothing sent. Under the GIL one process cannot emit faster
than (d), whatever the collector does.

Spans/s = spans exported / (first span started -> stop() returned, everything exported). The
accounting must hold: started = exported + failed + dropped (traces and spans). With the default
max_queue_size (2048) a burst can overflow the queue; the queue is then grown (x4) until neither
emitter drops anything, and the rows say so. "collector got" is the collector's own count of spans
stored during the run (/loadgen/stats): loadgen's accounting must match it exactly. CPU is this
process's (generator + exporter threads) and the collector's, so "spans per emitter CPU-second" is
the one-core figure.

--protocol otlp-http / otlp-grpc: (a) is `ReferenceEmitter(..., protocol=...)` and (b) the plain SDK
with the same OTLP exporter (opentelemetry-exporter-otlp-proto-http to <collector>/v1/traces, or
-proto-grpc to the collector's --otlp-grpc-port; no compression, as loadgen configures it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from _common import (
    Collector,
    banner,
    footer,
    median,
    print_table,
    proc_cpu_s,
    ratio_line,
    self_cpu_s,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, Tracer, set_span_in_context

from loadgen.emitter import ReferenceEmitter, zipkin_spans_url
from loadgen.emitter.protocols import ReferenceProtocol, otlp_traces_url
from loadgen.emitter.transports import DEFAULT_EXPORT_WORKERS, ZipkinEncoder, encode_otlp, encode_otlp_bytes

CHILDREN = 2
GOAL_SPANS_PER_S = 20_000.0
DEFAULT_QUEUE = 2048


def run_loadgen(
    collector: Collector, n: int, queue: int, tmp: Path, tag: str, protocol: str, workers: int
) -> dict[str, object]:
    emitter = ReferenceEmitter(
        collector.url,
        f"bench-{tag}",
        tmp / f"{tag}.reference.jsonl",
        rate_per_s=0,
        children=CHILDREN,
        max_queue_size=queue,
        protocol=protocol,
        grpc_endpoint=collector.grpc_target or None,
        export_workers=workers,
    )
    collector_pid = collector.pid
    got0 = collector_spans(collector)
    c0, k0, t0 = self_cpu_s(), proc_cpu_s(collector_pid), time.perf_counter()
    emitter.emit_burst(n)
    gen_s = time.perf_counter() - t0
    c = emitter.stop(timeout_s=120)
    wall = time.perf_counter() - t0
    cpu, kcpu = self_cpu_s() - c0, proc_cpu_s(collector_pid) - k0
    got = collector_spans(collector) - got0
    balanced = (
        c.traces_started == c.traces_exported + c.traces_failed + c.traces_dropped
        and c.spans_started == c.spans_exported + c.spans_failed + c.spans_dropped
        and got == c.spans_exported  # what the collector stored: no span lost or sent twice
    )
    return {
        "what": "a loadgen ReferenceEmitter", "queue": queue, "started": c.spans_started,
        "exported": c.spans_exported, "failed": c.spans_failed, "dropped": c.spans_dropped, "got": got,
        "balanced": "yes" if balanced and c.traces_pending == 0 else "NO",
        "gen_s": gen_s, "wall": wall, "rate": c.spans_exported / wall, "cpu_pct": 100 * cpu / wall,
        "per_cpu": c.spans_exported / cpu if cpu else 0.0, "collector_pct": 100 * kcpu / wall,
        "traces_dropped": c.traces_dropped,
    }  # fmt: skip


class _CountingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.ok = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.ok += len(spans)
        else:
            self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


def plain_exporter(collector: Collector, protocol: str) -> SpanExporter:
    """The exporter loadgen builds for `protocol`, as a plain SDK user would configure it."""
    if protocol == ReferenceProtocol.OTLP_HTTP:
        return HttpSpanExporter(
            endpoint=otlp_traces_url(collector.url), timeout=5, compression=Compression.NoCompression
        )
    if protocol == ReferenceProtocol.OTLP_GRPC:
        return GrpcSpanExporter(
            endpoint=collector.grpc_target,
            insecure=True,
            timeout=5,
            compression=grpc.Compression.NoCompression,
        )
    return ZipkinExporter(endpoint=zipkin_spans_url(collector.url), timeout=5)


def emit_traces(tracer: Tracer, n: int) -> None:
    """``n`` of the emitter's 3-span traces, through the plain SDK."""
    for seq in range(n):
        attrs: dict[str, str | int] = {"loadgen.run_id": "bench-sdk", "loadgen.ref_seq": seq}
        root = tracer.start_span("reference", kind=SpanKind.SERVER, attributes=attrs)
        parent = set_span_in_context(root)
        for i in range(CHILDREN):
            kind = SpanKind.CLIENT if i % 2 == 0 else SpanKind.INTERNAL
            tracer.start_span(
                f"reference.child-{i}",
                context=parent,
                kind=kind,
                attributes={**attrs, "loadgen.ref_child": i},
            ).end()
        root.end()


class _EncodeOnly(SpanProcessor):
    """Batches of 512 ended spans encoded with ``encode`` (None: thrown away), nothing sent."""

    def __init__(self, encode: Callable[[Sequence[ReadableSpan]], object] | None) -> None:
        self.encode = encode
        self.batch: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        if self.encode is None:
            return
        self.batch.append(span)
        if len(self.batch) >= 512:
            batch, self.batch = self.batch, []
            self.encode(batch)


def protocol_encoder(protocol: str) -> Callable[[Sequence[ReadableSpan]], object]:
    """The real encoder loadgen's emitter runs on each batch for ``protocol``."""
    if protocol == ReferenceProtocol.OTLP_HTTP:
        return encode_otlp_bytes
    if protocol == ReferenceProtocol.OTLP_GRPC:
        return encode_otlp
    return ZipkinEncoder()


def run_ceiling(n: int, protocol: str, encode: bool) -> dict[str, object]:
    """The one-process ceiling: the SDK creating ``n`` traces (and, with ``encode``, the protocol's
    encoder on every batch), nothing sent: spans per second of this process's CPU."""
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: "bench-ceiling"}), sampler=ALWAYS_ON, shutdown_on_exit=False
    )
    provider.add_span_processor(_EncodeOnly(protocol_encoder(protocol) if encode else None))
    c0, t0 = self_cpu_s(), time.perf_counter()
    emit_traces(provider.get_tracer("bench"), n)
    wall, cpu = time.perf_counter() - t0, self_cpu_s() - c0
    spans = n * (1 + CHILDREN)
    what = (
        f"d SDK creating + {protocol} encoder, no sending" if encode else "c SDK creating, nothing exported"
    )
    return {
        "what": what, "queue": "-", "started": spans, "exported": "-", "failed": "-", "dropped": "-", "got": "-",
        "balanced": "n/a", "gen_s": wall, "wall": wall, "rate": spans / wall, "cpu_pct": 100 * cpu / wall,
        "per_cpu": spans / cpu if cpu else 0.0, "collector_pct": 0.0, "traces_dropped": None,
    }  # fmt: skip


def collector_spans(collector: Collector) -> int:
    """Spans the collector has stored so far (its /loadgen/stats)."""
    with urllib.request.urlopen(f"{collector.url}/loadgen/stats", timeout=10) as resp:
        return int(json.load(resp)["spans_accepted"])


def run_sdk(collector: Collector, n: int, queue: int, protocol: str) -> dict[str, object]:
    exporter = _CountingExporter(plain_exporter(collector, protocol))
    collector_pid = collector.pid
    got0 = collector_spans(collector)
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: "bench-plain-sdk"}), sampler=ALWAYS_ON, shutdown_on_exit=False
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter, max_queue_size=queue, schedule_delay_millis=500, max_export_batch_size=512
        )
    )
    tracer = provider.get_tracer("bench")
    c0, k0, t0 = self_cpu_s(), proc_cpu_s(collector_pid), time.perf_counter()
    emit_traces(tracer, n)
    gen_s = time.perf_counter() - t0
    provider.force_flush()
    provider.shutdown()
    wall = time.perf_counter() - t0
    cpu, kcpu = self_cpu_s() - c0, proc_cpu_s(collector_pid) - k0
    started = n * (1 + CHILDREN)
    return {
        "what": "b plain OTel SDK", "queue": queue, "started": started, "exported": exporter.ok,
        "got": collector_spans(collector) - got0,
        "failed": exporter.failed, "dropped": started - exporter.ok - exporter.failed, "balanced": "n/a",
        "gen_s": gen_s, "wall": wall, "rate": exporter.ok / wall, "cpu_pct": 100 * cpu / wall,
        "per_cpu": exporter.ok / cpu if cpu else 0.0, "collector_pct": 100 * kcpu / wall, "traces_dropped": None,
    }  # fmt: skip


@dataclass
class Measured:
    rows: list[dict[str, object]] = field(default_factory=list)
    queue: int = DEFAULT_QUEUE
    balanced_all: bool = True
    pairs: list[float] = field(default_factory=list)
    a_rates: list[float] = field(default_factory=list)
    b_rates: list[float] = field(default_factory=list)
    a_cpu: list[float] = field(default_factory=list)
    create_cpu: list[float] = field(default_factory=list)  # (c) spans per CPU-s
    ceiling_cpu: list[float] = field(default_factory=list)  # (d) spans per CPU-s


def measure(traces: int, rounds: int, protocol: str, workers: int, tmp: Path) -> Measured:
    m = Measured()
    (tmp / "data").mkdir()
    with Collector(tmp / "data", otlp_grpc=protocol == ReferenceProtocol.OTLP_GRPC) as collector:
        # Tune: grow the queue until a burst drops nothing, in either emitter (the plain SDK queues
        # span objects, loadgen encoded batches: they overflow at different sizes).
        while True:
            tag = f"queue tuning{', default' if m.queue == DEFAULT_QUEUE else ''}"
            r = run_loadgen(collector, traces, m.queue, tmp, f"tune{m.queue}", protocol, workers)
            r["what"] = f"a loadgen ({tag})"
            m.rows.append(r)
            m.balanced_all &= r["balanced"] == "yes"
            sdk = run_sdk(collector, traces, m.queue, protocol)
            sdk["what"] = f"b plain SDK ({tag})"
            m.rows.append(sdk)
            if (not r["dropped"] and not sdk["dropped"]) or m.queue >= traces * (1 + CHILDREN):
                break
            m.queue *= 4
        for i in range(rounds):
            c = run_ceiling(traces, protocol, encode=False)
            d = run_ceiling(traces, protocol, encode=True)
            a = run_loadgen(collector, traces, m.queue, tmp, f"a{i}", protocol, workers)
            b = run_sdk(collector, traces, m.queue, protocol)
            m.rows += [c, d, a, b]
            m.balanced_all &= a["balanced"] == "yes"
            m.pairs.append(float(a["rate"]) / float(b["rate"]))
            m.a_rates.append(float(a["rate"]))
            m.b_rates.append(float(b["rate"]))
            m.a_cpu.append(float(a["per_cpu"]))
            m.create_cpu.append(float(c["per_cpu"]))
            m.ceiling_cpu.append(float(d["per_cpu"]))
    return m


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds, tiny sizes (smoke test)")
    p.add_argument(
        "--traces", type=int, default=20_000, help="traces per burst (3 spans each; default 20000)"
    )
    p.add_argument("--rounds", type=int, default=3, help="a/b pairs at the tuned queue size (default 3)")
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_EXPORT_WORKERS,
        help=f"loadgen's export workers (default {DEFAULT_EXPORT_WORKERS}, the emitter's own)",
    )
    p.add_argument(
        "--protocol",
        choices=[str(x) for x in ReferenceProtocol],
        default=str(ReferenceProtocol.ZIPKIN),
        help="how both emitters export (default zipkin); the plain SDK uses the same exporter",
    )
    args = p.parse_args()
    if args.quick:
        args.traces, args.rounds = 300, 1
    over = "" if args.protocol == ReferenceProtocol.ZIPKIN else f" over {args.protocol}"
    banner(
        f"side-emitter: bursts of {args.traces:,} traces ({args.traces * (1 + CHILDREN):,} spans){over}, "
        f"{args.workers} export worker(s)",
        args.quick,
    )
    with tempfile.TemporaryDirectory(prefix="bench-emitter-") as tmp_s:
        m = measure(args.traces, args.rounds, args.protocol, args.workers, Path(tmp_s))
    rows, queue, pairs, a_rates, b_rates, a_cpu = m.rows, m.queue, m.pairs, m.a_rates, m.b_rates, m.a_cpu
    balanced_all = m.balanced_all
    print_table(
        [
            "emitter",
            "max_queue_size",
            "spans started",
            "exported",
            "failed",
            "dropped",
            "collector got",
            "accounting balanced",
            "burst s",
            "until stopped s",
            "spans/s",
            "emitter CPU %",
            "spans/emitter CPU-s",
            "collector CPU %",
        ],
        [
            [
                r["what"],
                r["queue"],
                r["started"],
                r["exported"],
                r["failed"],
                r["dropped"],
                r["got"],
                r["balanced"],
                r["gen_s"],
                r["wall"],
                r["rate"],
                r["cpu_pct"],
                r["per_cpu"],
                r["collector_pct"],
            ]
            for r in rows
        ],
    )
    print(
        f"   tuned max_queue_size = {queue} (default {DEFAULT_QUEUE}); medians over {args.rounds} round(s): "
        f"loadgen {median(a_rates):,.0f} spans/s, plain SDK {median(b_rates):,.0f} spans/s"
    )
    print(
        f"   one-process ceiling (GIL): the SDK creates {median(m.create_cpu):,.0f} spans per CPU-s with "
        f"nothing exported, {median(m.ceiling_cpu):,.0f} with the {args.protocol} encoder on every batch; "
        f"loadgen's emitter, sending too: {median(a_cpu):,.0f} "
        f"({median(a_cpu) / median(m.ceiling_cpu):.2f} of the ceiling)"
    )
    print()
    ratio_line(
        f"loadgen emitter spans/s{over} / {GOAL_SPANS_PER_S:,.0f} goal",
        median(a_rates) / GOAL_SPANS_PER_S,
        ">=",
        1.0,
        f"({median(a_rates):,.0f} spans/s; {median(a_cpu):,.0f} spans per emitter CPU-s)",
    )
    ratio_line(
        f"loadgen emitter / plain OTel SDK spans/s{over} (median of {len(pairs)} alternating pairs)",
        median(pairs),
    )
    print(
        f"   accounting started = exported + failed + dropped, exported = what the collector stored, "
        f"held in every loadgen run: "
        f"{'yes' if balanced_all else 'NO'}"
    )
    footer()
    return 0 if balanced_all else 1


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)
