"""Side-emitter throughput: loadgen's ReferenceEmitter vs the plain OpenTelemetry SDK pipeline.

    python bench/emitter.py [--quick] [--traces N] [--rounds R] [--protocol zipkin|otlp-http|otlp-grpc]

Starts the embedded collector (`python -m loadgen.stack.collector`, stopped by PID), then in this
process, alternately (a, b, a, b, ...):

  (a) loadgen   `ReferenceEmitter(collector_url, run_id, log, rate_per_s=0, children=2)`
                `.emit_burst(N)` then `.stop()` - with its per-trace accounting and JSON-lines log;
  (b) plain SDK the same 3-span traces through TracerProvider + BatchSpanProcessor + ZipkinExporter
                (same queue/batch settings), with only a span counter on the exporter.

Spans/s = spans exported / (first span started -> stop() returned, everything exported). The
accounting must hold: started = exported + failed + dropped (traces and spans). With the default
max_queue_size (2048) a burst can overflow the queue; the queue is then grown (x4) until nothing is
dropped, and the rows say so. CPU is this process's (generator + exporter threads) and the
collector's, so "spans per emitter CPU-second" is the one-core figure.

--protocol otlp-http / otlp-grpc: (a) is `ReferenceEmitter(..., protocol=...)` and (b) the plain SDK
with the same OTLP exporter (opentelemetry-exporter-otlp-proto-http to <collector>/v1/traces, or
-proto-grpc to the collector's --otlp-grpc-port; no compression, as loadgen configures it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
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
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind, set_span_in_context

from loadgen.emitter import ReferenceEmitter, zipkin_spans_url
from loadgen.emitter.protocols import ReferenceProtocol, otlp_traces_url

CHILDREN = 2
GOAL_SPANS_PER_S = 20_000.0
DEFAULT_QUEUE = 2048


def run_loadgen(
    collector: Collector, n: int, queue: int, tmp: Path, tag: str, protocol: str
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
    )
    collector_pid = collector.pid
    c0, k0, t0 = self_cpu_s(), proc_cpu_s(collector_pid), time.perf_counter()
    emitter.emit_burst(n)
    gen_s = time.perf_counter() - t0
    c = emitter.stop(timeout_s=120)
    wall = time.perf_counter() - t0
    cpu, kcpu = self_cpu_s() - c0, proc_cpu_s(collector_pid) - k0
    balanced = (
        c.traces_started == c.traces_exported + c.traces_failed + c.traces_dropped
        and c.spans_started == c.spans_exported + c.spans_failed + c.spans_dropped
    )
    return {
        "what": "a loadgen ReferenceEmitter", "queue": queue, "started": c.spans_started,
        "exported": c.spans_exported, "failed": c.spans_failed, "dropped": c.spans_dropped,
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


def run_sdk(collector: Collector, n: int, queue: int, protocol: str) -> dict[str, object]:
    exporter = _CountingExporter(plain_exporter(collector, protocol))
    collector_pid = collector.pid
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
    gen_s = time.perf_counter() - t0
    provider.force_flush()
    provider.shutdown()
    wall = time.perf_counter() - t0
    cpu, kcpu = self_cpu_s() - c0, proc_cpu_s(collector_pid) - k0
    started = n * (1 + CHILDREN)
    return {
        "what": "b plain OTel SDK", "queue": queue, "started": started, "exported": exporter.ok,
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


def measure(traces: int, rounds: int, protocol: str, tmp: Path) -> Measured:
    m = Measured()
    (tmp / "data").mkdir()
    with Collector(tmp / "data", otlp_grpc=protocol == ReferenceProtocol.OTLP_GRPC) as collector:
        # Tune: grow the queue until a burst drops nothing.
        while True:
            r = run_loadgen(collector, traces, m.queue, tmp, f"tune{m.queue}", protocol)
            r["what"] = f"a loadgen (queue tuning{', default' if m.queue == DEFAULT_QUEUE else ''})"
            m.rows.append(r)
            m.balanced_all &= r["balanced"] == "yes"
            if not r["dropped"] or m.queue >= traces * (1 + CHILDREN):
                break
            m.queue *= 4
        for i in range(rounds):
            a = run_loadgen(collector, traces, m.queue, tmp, f"a{i}", protocol)
            b = run_sdk(collector, traces, m.queue, protocol)
            m.rows += [a, b]
            m.balanced_all &= a["balanced"] == "yes"
            m.pairs.append(float(a["rate"]) / float(b["rate"]))
            m.a_rates.append(float(a["rate"]))
            m.b_rates.append(float(b["rate"]))
            m.a_cpu.append(float(a["per_cpu"]))
    return m


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="seconds, tiny sizes (smoke test)")
    p.add_argument(
        "--traces", type=int, default=20_000, help="traces per burst (3 spans each; default 20000)"
    )
    p.add_argument("--rounds", type=int, default=3, help="a/b pairs at the tuned queue size (default 3)")
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
        f"side-emitter: bursts of {args.traces:,} traces ({args.traces * (1 + CHILDREN):,} spans){over}",
        args.quick,
    )
    with tempfile.TemporaryDirectory(prefix="bench-emitter-") as tmp_s:
        m = measure(args.traces, args.rounds, args.protocol, Path(tmp_s))
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
        f"   accounting started = exported + failed + dropped held in every loadgen run: "
        f"{'yes' if balanced_all else 'NO'}"
    )
    footer()
    return 0 if balanced_all else 1


if __name__ == "__main__":
    start = time.perf_counter()
    rc = main()
    print(f"   wall time {time.perf_counter() - start:.1f} s")
    sys.exit(rc)
