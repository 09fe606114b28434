"""The watch's traffic pieces that need no mesh: the export tap that tells the engine which
reference traces were exported whole, Locust's users, and waiting for a previous Locust."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import set_span_in_context

from loadgen.emitter import ReferenceEmitter
from loadgen.emitter.accounting import trace_hex
from loadgen.run.options import RunOptions
from loadgen.watch import traffic
from loadgen.watch.traffic import ExportTap, locust_users, wait_for_previous_locust


class Inner(SpanExporter):
    def __init__(self) -> None:
        self.ok = True
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        return SpanExportResult.SUCCESS if self.ok else SpanExportResult.FAILURE


class Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _trace(children: int) -> list[ReadableSpan]:
    """One root with `children` child spans, ended children first (as the emitter does)."""
    collect = Collect()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(collect))
    tracer = provider.get_tracer("test")
    root = tracer.start_span("root", start_time=1_700_000_000_000_000_000)
    for i in range(children):
        tracer.start_span(f"child-{i}", context=set_span_in_context(root)).end()
    root.end()
    return collect.spans


def test_a_trace_is_handed_over_once_all_its_spans_were_exported() -> None:
    inner = Inner()
    tap = ExportTap(inner, spans_per_trace=3)
    spans = _trace(2)
    tid = trace_hex(spans[0].context.trace_id)
    assert tap.export(spans[:2]) is SpanExportResult.SUCCESS  # two children
    assert tap.drain() == []  # the root is still to come
    tap.export(spans[2:])
    [done] = tap.drain()
    assert (done.trace_id, done.spans) == (tid, 3)
    assert done.sent_at == 1_700_000_000.0  # the root's start
    assert done.seen_at >= done.sent_at
    assert tap.drain() == []  # drained once
    assert inner.calls == 2


def test_a_failed_export_hands_nothing_over() -> None:
    inner = Inner()
    inner.ok = False
    tap = ExportTap(inner, spans_per_trace=3)
    assert tap.export(_trace(2)) is SpanExportResult.FAILURE  # the result goes back unchanged
    assert tap.drain() == []


def test_users_grow_with_the_rate() -> None:
    assert [locust_users(r) for r in (0.5, 2, 40, 41, 200)] == [4, 4, 4, 5, 20]


def test_no_previous_locust_means_no_wait(tmp_path: Path) -> None:
    assert wait_for_previous_locust(tmp_path / "locust.pid") is True
    (tmp_path / "locust.pid").write_text(f"{os.getpid()}\n")  # alive, but not a Locust
    assert wait_for_previous_locust(tmp_path / "locust.pid", timeout_s=0.1) is True
    assert not (tmp_path / "locust.pid").exists()


def test_locust_log_is_kept_small_while_locust_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "LOG_LIMIT_BYTES", 100)
    locust = traffic.LocustTraffic(
        RunOptions(), "rid", "http://127.0.0.1:9", "h", None, tmp_path / "segments", 1.0, tmp_path
    )
    locust.log_path.write_text("x" * 50)
    assert locust.trim_log() is False  # under the limit: untouched
    with open(locust.log_path, "a") as appending:  # as Locust's stdout: O_APPEND
        appending.write("y" * 100)
        appending.flush()
        assert locust.trim_log() is True
        appending.write("after\n")
    assert (tmp_path / "locust.log.1").read_text() == "x" * 50 + "y" * 100
    assert locust.log_path.read_text() == "after\n"  # the writer goes on at the new start


def test_the_emitter_hands_its_spans_to_the_tap(tmp_path: Path) -> None:
    """The contract the watch relies on: ReferenceEmitter(exporter=...) exports every span of each
    trace through the given exporter, so the tap sees each trace whole, with its root's start."""
    inner = Inner()
    tap = ExportTap(inner, spans_per_trace=3)
    emitter = ReferenceEmitter("http://127.0.0.1:9", "rid", tmp_path / "ref.jsonl", rate_per_s=0, children=2,
                               exporter=tap)  # fmt: skip
    before = time.time()
    assert emitter.emit_burst(5) == 5
    counters = emitter.stop()
    done = tap.drain()
    assert counters.traces_exported == 5 and len(done) == 5
    assert len({d.trace_id for d in done}) == 5
    assert all(d.spans == 3 and before - 1 <= d.sent_at <= d.seen_at for d in done)
