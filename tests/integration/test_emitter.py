"""The side-emitter against a real loopback Zipkin-like sink (real SDK, real Zipkin JSON exporter)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loadgen.emitter import (
    EmitterCounters,
    ReferenceEmitter,
    ReferenceSummary,
    read_reference_log,
    summarize_reference_log,
)

pytestmark = pytest.mark.integration


class ZipkinSink(ThreadingHTTPServer):
    """Records POSTed Zipkin v2 JSON spans; answers ``status`` after ``delay_s``. ``refuse`` (POST
    number, from 0 in arrival order -> bool) picks POSTs to answer 503 to, without storing them."""

    daemon_threads = True

    def __init__(
        self, status: int = 202, delay_s: float = 0.0, refuse: Callable[[int], bool] | None = None
    ) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.status = status
        self.delay_s = delay_s
        self.refuse = refuse
        self.lock = threading.Lock()
        self.spans: list[dict[str, Any]] = []
        self.posts = 0  # stored
        self.arrived = 0  # every POST to the spans path
        self.refused = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def by_trace(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        with self.lock:
            for span in self.spans:
                out[span["traceId"]].append(span)
        return out


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real collector
    server: ZipkinSink

    def setup(self) -> None:
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:  # http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        sink = self.server
        if sink.delay_s:
            time.sleep(sink.delay_s)
        status = sink.status
        if self.path == "/api/v2/spans":
            with sink.lock:
                refused = sink.refuse is not None and sink.refuse(sink.arrived)
                sink.arrived += 1
                if refused:
                    sink.refused += 1
                    status = 503
                elif status < 300:
                    sink.spans.extend(json.loads(body))
                    sink.posts += 1
        reply = b"" if status < 300 else b"collector busy"
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


def serve(sink: ZipkinSink) -> Iterator[ZipkinSink]:
    # A short poll interval: shutdown() waits for one poll.
    thread = threading.Thread(target=sink.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()
        thread.join(5)


@pytest.fixture
def sink() -> Iterator[ZipkinSink]:
    yield from serve(ZipkinSink())


def emitter(url: str, tmp_path: Path, **kw: Any) -> ReferenceEmitter:
    kw.setdefault("rate_per_s", 0)
    kw.setdefault("schedule_delay_ms", 50)
    return ReferenceEmitter(url, "run-it-1", tmp_path / "run" / "reference.jsonl", **kw)


def agree(em: ReferenceEmitter, c: EmitterCounters) -> ReferenceSummary:
    """The counters balance exactly and the streamed log folds to the same numbers."""
    assert c.traces_started == c.traces_exported + c.traces_failed + c.traces_dropped
    assert c.spans_started == c.spans_exported + c.spans_failed + c.spans_dropped
    assert c.traces_pending == 0 and c.spans_pending == 0 and c.late_spans == 0
    s = summarize_reference_log(read_reference_log(em.log_path))
    assert s.complete and s.run_id == em.run_id
    assert (s.started, s.exported, s.failed, s.dropped) == (
        c.traces_started,
        c.traces_exported,
        c.traces_failed,
        c.traces_dropped,
    )
    assert (s.spans_exported, s.spans_failed, s.spans_dropped) == (
        c.spans_exported,
        c.spans_failed,
        c.spans_dropped,
    )
    assert (s.export_calls, s.export_failures) == (c.export_calls, c.export_failures)
    assert s.end_counters == c.as_dict()
    return s


def test_all_traces_arrive_with_structure_and_run_id(sink: ZipkinSink, tmp_path: Path) -> None:
    em = emitter(sink.url, tmp_path, children=2, service_name="ref-svc")
    assert em.emit_burst(200) == 200
    c = em.stop(timeout_s=20)
    assert c.traces_started == c.traces_exported == 200
    assert (c.spans_exported, c.export_failures, c.last_error) == (600, 0, None)
    s = agree(em, c)

    received = sink.by_trace()
    assert set(received) == {tid for tid, _, _ in s.iter_traces()}
    seqs = set()
    for tid, state, expected in s.iter_traces():
        assert state == "exported" and expected == 3
        spans = received[tid]
        assert len(spans) == 3, tid
        roots = [sp for sp in spans if "parentId" not in sp]
        assert len(roots) == 1
        root = roots[0]
        assert (root["name"], root["kind"]) == ("reference", "SERVER")
        children = [sp for sp in spans if sp is not root]
        assert all(ch["parentId"] == root["id"] for ch in children)
        # Zipkin has no INTERNAL kind: the exporter sends "kind": null.
        assert sorted(ch.get("kind") or "INTERNAL" for ch in children) == ["CLIENT", "INTERNAL"]
        assert len({sp["id"] for sp in spans}) == 3
        for sp in spans:
            assert sp["traceId"] == tid and len(tid) == 32 and tid == tid.lower()
            assert sp["localEndpoint"]["serviceName"] == "ref-svc"
            assert sp["tags"]["loadgen.run_id"] == "run-it-1"
            assert sp["tags"]["loadgen.ref_seq"] == root["tags"]["loadgen.ref_seq"]
        seqs.add(int(root["tags"]["loadgen.ref_seq"]))
    assert seqs == set(range(200))


def test_collector_503_counts_failed_and_never_raises(tmp_path: Path) -> None:
    for sink in serve(ZipkinSink(status=503)):
        em = emitter(sink.url, tmp_path)
        assert em.emit_burst(50) == 50
        c = em.stop(timeout_s=20)
        assert c.traces_failed == c.traces_started == 50
        assert c.spans_failed == 150 and c.export_failures == c.export_calls > 0
        assert c.last_error == "HTTP 503: collector busy"
        agree(em, c)


@pytest.mark.parametrize("workers", [1, 4])
def test_nothing_listening_fails_fast(workers: int, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    em = emitter(f"http://127.0.0.1:{port}", tmp_path, export_timeout_s=2.0, export_workers=workers)
    with em:
        assert em.emit_burst(40) == 40
        t0 = time.monotonic()
    c = em.counters()
    assert time.monotonic() - t0 < 5.0
    assert c.traces_failed == 40 and c.traces_exported == 0 and c.export_failures == c.export_calls > 0
    assert c.last_error is not None and c.last_error.startswith("ConnectionError")
    agree(em, c)


def test_small_queue_and_slow_collector_drop_exactly(tmp_path: Path) -> None:
    for sink in serve(ZipkinSink(delay_s=0.05)):
        em = emitter(sink.url, tmp_path, max_queue_size=12, max_export_batch_size=4, export_timeout_s=5)
        assert em.emit_burst(200) == 200
        c = em.stop(timeout_s=20)
        assert c.traces_started == 200
        assert c.traces_dropped > 0 and c.spans_dropped > 0 and c.traces_exported > 0
        assert c.traces_failed == 0
        s = agree(em, c)
        # Ground truth from the wire: a trace is "exported" iff all its spans arrived.
        received = sink.by_trace()
        for tid, state, expected in s.iter_traces():
            got = len(received.get(tid, []))
            assert got == expected if state == "exported" else got < expected, (tid, state, got)
        assert sum(len(v) for v in received.values()) == c.spans_exported


def test_reference_log_streams_before_stop(sink: ZipkinSink, tmp_path: Path) -> None:
    em = emitter(sink.url, tmp_path)
    em.emit_burst(20)
    # The exporter's force_flush is deterministic: after it, the export record is on disk.
    assert em._provider is not None and em._provider.force_flush()
    partial = summarize_reference_log(read_reference_log(em.log_path))
    assert not partial.complete
    assert partial.started == partial.exported == 20
    c = em.stop()
    agree(em, c)


def test_parallel_workers_against_a_collector_refusing_every_third_post(tmp_path: Path) -> None:
    """Four workers post at once; the sink answers 503 to every third POST it receives. Batches of
    7 spans split traces across POSTs, so a trace can have spans in a stored and a refused POST.
    The books balance, match the log, and match the wire: a trace is exported iff all its spans
    were stored, every stored span was counted exported once, and none arrived twice."""
    for sink in serve(ZipkinSink(refuse=lambda n: n % 3 == 2)):
        em = emitter(sink.url, tmp_path, export_workers=4, max_export_batch_size=7, max_queue_size=10_000)
        assert em.emit_burst(300) == 300
        c = em.stop(timeout_s=20)
        assert c.spans_started == 900 and c.spans_dropped == 0
        assert c.export_calls == sink.arrived == 129  # ceil(900 / 7): each batch posted once
        assert c.export_failures == sink.refused == 43
        assert c.last_error == "HTTP 503: collector busy"
        assert c.traces_failed > 0 and c.traces_exported > 0
        s = agree(em, c)
        received = sink.by_trace()
        for tid, state, expected in s.iter_traces():
            got = len(received.get(tid, []))
            assert got == expected if state == "exported" else got < expected, (tid, state, got)
        ids = [span["id"] for spans in received.values() for span in spans]
        assert len(ids) == len(set(ids)) == c.spans_exported


def test_stop_while_several_posts_hang_fails_them_and_drops_the_queue(tmp_path: Path) -> None:
    """A collector that takes 3 s per POST, three workers, stop() after 0.3 s: the three POSTs in
    flight are failed, the batches still queued dropped, and the late 202s change nothing."""
    for sink in serve(ZipkinSink(delay_s=3.0)):
        em = emitter(sink.url, tmp_path, export_workers=3, max_export_batch_size=3, schedule_delay_ms=60_000)
        assert em.emit_burst(10) == 10
        t0 = time.monotonic()
        c = em.stop(timeout_s=0.3)
        assert time.monotonic() - t0 < 2.0  # the deadline, not the collector, ended it
        assert (c.traces_failed, c.traces_dropped, c.traces_exported) == (3, 7, 0)
        assert c.last_error == "export still in flight at stop deadline"
        agree(em, c)
        waited = time.monotonic() + 10
        while sink.posts < 3 and time.monotonic() < waited:  # the POSTs complete after the books closed
            time.sleep(0.05)
        assert sink.posts == 3 and em.counters() == c
