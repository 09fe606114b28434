"""The side-emitter over OTLP/HTTP and OTLP/gRPC (the real OpenTelemetry OTLP exporters) against
loopback receivers that decode with the real opentelemetry-proto classes: every trace arrives as
started, and refused exports, a dead receiver and a full batch queue are each accounted exactly
(started = exported + failed + dropped, live counters equal to the reference log's fold, and the
wire as ground truth).

Fault cases stay fast: non-retryable codes fail at once, and for retryable ones (HTTP 503, gRPC
UNAVAILABLE) the exporter's timeout is below its first backoff (~1 s), so it gives up without
waiting.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from loadgen.emitter import ReferenceEmitter, ReferenceSummary, check_reference_target, reference_target
from loadgen.stack.procs import ManagedProcess, python_module_argv
from tests.integration.otlp_receiver import OtlpSpan, decode_export
from tests.integration.test_emitter import agree

pytestmark = pytest.mark.integration

RUN_ID = "run-otlp-1"


@dataclass
class Receiver:
    """What both receivers share: the spans they accepted, the credentials they saw, the answer
    they give, and a gate that holds every export until it is opened."""

    refuse: Any = None  # HTTP status or grpc.StatusCode to answer instead of success
    refuse_when: Callable[[int], bool] | None = None  # which calls (from 0) to refuse; None: all
    gate: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    spans: list[OtlpSpan] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    calls: int = 0
    refused: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self.gate.set()

    def take(self, body: bytes, auth: str | None, protocol: str) -> bool:
        """Record one export ("http" or "grpc"); False when it is refused."""
        self.gate.wait(10)
        with self.lock:
            call = self.calls
            self.calls += 1
            self.auth.append(auth or "")
            if self.refuse is not None and (self.refuse_when is None or self.refuse_when(call)):
                self.refused += 1
                return False
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            self.spans.extend(decode_export(request, protocol))
            return True

    def by_trace(self) -> dict[str, list[OtlpSpan]]:
        out: dict[str, list[OtlpSpan]] = defaultdict(list)
        with self.lock:
            for span in self.spans:
                out[span.trace_id].append(span)
        return out


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def do_POST(self) -> None:  # http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        rec = self.server.receiver
        if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
            status, reply = 404, b"not an OTLP/HTTP protobuf export"
        elif rec.take(body, self.headers.get("Authorization"), "http"):
            status, reply = 200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        else:
            status, reply = int(rec.refuse), b"receiver refused"
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: Receiver) -> None:
        super().__init__(("127.0.0.1", 0), _HttpHandler)
        self.receiver = receiver


def serve_http(receiver: Receiver) -> Iterator[Receiver]:
    server = _HttpServer(receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield receiver
    finally:
        receiver.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        auth = dict(context.invocation_metadata()).get("authorization")
        if not self.receiver.take(request.SerializeToString(), auth, "grpc"):
            context.abort(self.receiver.refuse, "receiver refused")
        return trace_service_pb2.ExportTraceServiceResponse()


def serve_grpc(receiver: Receiver) -> Iterator[Receiver]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(receiver), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        receiver.gate.set()
        server.stop(0).wait(5)


def serve(protocol: str, receiver: Receiver) -> Iterator[Receiver]:
    return serve_http(receiver) if protocol == "otlp-http" else serve_grpc(receiver)


def emitter(protocol: str, url: str, tmp_path: Path, **kw: Any) -> ReferenceEmitter:
    """An emitter to `url`: the collector URL for otlp-http, the gRPC endpoint for otlp-grpc (the
    collector URL is then only where credentials would come from)."""
    kw.setdefault("rate_per_s", 0)
    kw.setdefault("schedule_delay_ms", 50)
    if protocol == "otlp-grpc":
        kw.setdefault("grpc_endpoint", url)
        url = "http://127.0.0.1:9"
    return ReferenceEmitter(url, RUN_ID, tmp_path / "run" / "reference.jsonl", protocol=protocol, **kw)


def wire_truth(s: ReferenceSummary, received: dict[str, list[OtlpSpan]]) -> None:
    """A trace is exported iff every one of its spans reached the receiver."""
    for tid, state, expected in s.iter_traces():
        got = len(received.get(tid, []))
        assert got == expected if state == "exported" else got < expected, (tid, state, got)
    assert set(received) <= {tid for tid, _, _ in s.iter_traces()}


PROTOCOLS = ["otlp-http", "otlp-grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_trace_arrives_with_structure_ids_and_credentials(protocol: str, tmp_path: Path) -> None:
    for rec in serve(protocol, Receiver()):
        # Credentials in the URL travel as basic auth, never in the log.
        host = rec.url.removeprefix("http://")
        secret_url = f"http://ref%40user:s3cr%3At@{host}"
        if protocol == "otlp-http":
            em = ReferenceEmitter(
                secret_url, RUN_ID, tmp_path / "reference.jsonl", rate_per_s=0, schedule_delay_ms=50,
                children=2, service_name="ref-svc", protocol=protocol,
            )  # fmt: skip
        else:
            em = ReferenceEmitter(
                secret_url, RUN_ID, tmp_path / "reference.jsonl", rate_per_s=0, schedule_delay_ms=50,
                children=2, service_name="ref-svc", protocol=protocol, grpc_endpoint=host,
            )  # fmt: skip
        assert em.emit_burst(100) == 100
        c = em.stop(timeout_s=20)
        assert (c.traces_started, c.traces_exported, c.spans_exported) == (100, 100, 300)
        assert (c.export_failures, c.last_error) == (0, None)
        s = agree(em, c)
        received = rec.by_trace()
        wire_truth(s, received)
        assert set(received) == set(s.exported_trace_ids())
        assert {sp.protocol for sp in rec.spans} == {protocol.removeprefix("otlp-")}  # http / grpc
        seqs = set()
        for tid, spans in received.items():
            roots = [sp for sp in spans if not sp.parent_id]
            assert len(roots) == 1 and (roots[0].name, roots[0].kind) == ("reference", "SERVER")
            root = roots[0]
            children = [sp for sp in spans if sp is not root]
            assert all(ch.parent_id == root.span_id for ch in children)
            assert sorted(ch.kind for ch in children) == ["CLIENT", "INTERNAL"]
            for sp in spans:
                assert sp.service == "ref-svc" and sp.trace_id == tid
                assert sp.attributes["loadgen.run_id"] == RUN_ID
                assert sp.attributes["loadgen.ref_seq"] == root.attributes["loadgen.ref_seq"]
            seqs.add(root.attributes["loadgen.ref_seq"])
        assert seqs == set(range(100))
        # base64("ref@user:s3cr:t"), decoded from the percent-encoded user-info
        assert set(rec.auth) == {"Basic cmVmQHVzZXI6czNjcjp0"}
        text = em.log_path.read_text()
        assert "s3cr" not in text and "cmVmQHVzZXI6czNjcjp0" not in text
        opened = json.loads(text.splitlines()[0])
        assert opened["protocol"] == protocol and s.protocol == protocol
        want = f"http://{host}/v1/traces" if protocol == "otlp-http" else f"http://{host}"
        assert opened["endpoint"] == want


@pytest.mark.parametrize(
    ("protocol", "refuse", "timeout_s", "error"),
    [
        ("otlp-http", 400, 5.0, "HTTP 400: receiver refused"),  # not retryable: fails at once
        ("otlp-http", 503, 0.3, "HTTP 503: receiver refused"),  # retryable, timeout < first backoff
        ("otlp-grpc", grpc.StatusCode.PERMISSION_DENIED, 5.0, "gRPC PERMISSION_DENIED: receiver refused"),
        ("otlp-grpc", grpc.StatusCode.UNAVAILABLE, 0.3, "gRPC UNAVAILABLE: receiver refused"),
    ],
)
def test_refused_exports_count_failed(
    protocol: str, refuse: Any, timeout_s: float, error: str, tmp_path: Path
) -> None:
    for rec in serve(protocol, Receiver(refuse=refuse)):
        em = emitter(protocol, rec.url, tmp_path, export_timeout_s=timeout_s)
        assert em.emit_burst(30) == 30
        t0 = time.monotonic()
        c = em.stop(timeout_s=20)
        assert time.monotonic() - t0 < 5.0  # no long backoff
        assert (c.traces_failed, c.traces_exported, c.spans_failed) == (30, 0, 90)
        assert c.export_failures == c.export_calls == rec.calls > 0
        assert c.last_error == error
        agree(em, c)
        assert rec.spans == []


@pytest.mark.parametrize(
    ("protocol", "refuse", "error"),
    [
        ("otlp-http", 503, "HTTP 503: receiver refused"),
        ("otlp-grpc", grpc.StatusCode.UNAVAILABLE, "gRPC UNAVAILABLE: receiver refused"),
    ],
)
def test_parallel_workers_against_a_receiver_refusing_every_third_export(
    protocol: str, refuse: Any, error: str, tmp_path: Path
) -> None:
    """Four workers, each with its own exporter and connection; every third export the receiver
    gets is refused (retryable, the timeout below the first backoff: one attempt each). Batches of 7
    split traces across exports. The books balance, match the log and the wire, and no span is
    received twice."""
    for rec in serve(protocol, Receiver(refuse=refuse, refuse_when=lambda n: n % 3 == 2)):
        em = emitter(
            protocol, rec.url, tmp_path, export_workers=4, max_export_batch_size=7,
            max_queue_size=10_000, export_timeout_s=0.3,
        )  # fmt: skip
        assert em.emit_burst(300) == 300
        c = em.stop(timeout_s=20)
        assert c.spans_started == 900 and c.spans_dropped == 0
        assert c.export_calls == rec.calls == 129 and c.export_failures == rec.refused == 43
        assert c.last_error == error and c.traces_failed > 0 and c.traces_exported > 0
        s = agree(em, c)
        received = rec.by_trace()
        wire_truth(s, received)
        ids = [sp.span_id for spans in received.values() for sp in spans]
        assert len(ids) == len(set(ids)) == c.spans_exported


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nothing_listening_counts_failed_fast(protocol: str, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    em = emitter(protocol, f"http://127.0.0.1:{port}", tmp_path, export_timeout_s=0.5)
    assert em.emit_burst(20) == 20
    t0 = time.monotonic()
    c = em.stop(timeout_s=10)
    assert time.monotonic() - t0 < 5.0
    assert (c.traces_failed, c.traces_exported) == (20, 0)
    assert c.last_error is not None
    want = "ConnectionError" if protocol == "otlp-http" else "gRPC UNAVAILABLE"
    assert c.last_error.startswith(want), c.last_error
    agree(em, c)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_full_batch_queue_drops_exactly(protocol: str, tmp_path: Path) -> None:
    """The receiver holds every export while 200 traces (600 spans) go into a 12-span queue: the
    queue overflows, and what never reached the exporter is dropped, exactly."""
    for rec in serve(protocol, Receiver()):
        rec.gate.clear()
        em = emitter(protocol, rec.url, tmp_path, max_queue_size=12, max_export_batch_size=4)
        assert em.emit_burst(200) == 200
        rec.gate.set()
        c = em.stop(timeout_s=20)
        assert c.traces_started == 200 and c.traces_failed == 0
        # At most the 12 queued spans and one 4-span batch per held export worker got through.
        room = 12 + 4 * em.export_workers
        assert em.export_workers > 1  # the default sends in parallel
        assert 0 < c.spans_exported <= room and c.spans_dropped == 600 - c.spans_exported
        assert c.traces_dropped >= 200 - room // 3
        s = agree(em, c)
        received = rec.by_trace()
        wire_truth(s, received)
        assert sum(len(v) for v in received.values()) == c.spans_exported


@pytest.mark.parametrize("protocol", ["zipkin", *PROTOCOLS])
def test_preflight_accepts_a_receiver_and_names_a_wrong_one(protocol: str, tmp_path: Path) -> None:
    if protocol == "zipkin":  # an OTLP/HTTP receiver is not a Zipkin endpoint
        for rec in serve_http(Receiver()):
            problem = check_reference_target(reference_target("zipkin", rec.url))
            assert problem == (
                f"collector {rec.url} answered 404 to POST /api/v2/spans (want 202): "
                "is it a Zipkin v2 endpoint (Jaeger's Zipkin receiver listens on 9411)?"
            )
        return
    for rec in serve(protocol, Receiver()):
        target = reference_target(protocol, rec.url, rec.url if protocol == "otlp-grpc" else None)
        assert check_reference_target(target) is None
        assert rec.calls == 1 and rec.spans == []
    for rec in serve(
        protocol, Receiver(refuse=403 if protocol == "otlp-http" else grpc.StatusCode.UNAUTHENTICATED)
    ):
        target = reference_target(protocol, rec.url, rec.url if protocol == "otlp-grpc" else None)
        problem = check_reference_target(target)
        assert problem is not None
        if protocol == "otlp-http":
            assert problem.startswith(f"collector {rec.url} answered 403 to POST /v1/traces (want 200)")
        else:
            assert problem.startswith(
                f"OTLP/gRPC endpoint {rec.url} refused an empty export (gRPC UNAUTHENTICATED"
            )


def test_reference_spans_reach_the_embedded_collector_over_every_protocol(tmp_path: Path) -> None:
    """Each protocol into the real embedded collector (Zipkin and OTLP/HTTP on its HTTP port,
    OTLP/gRPC on its own): every trace the reference log calls exported is found through the
    collector's Zipkin API, complete, with the ids, tree and tags the emitter sent."""
    collector = ManagedProcess(
        "collector",
        python_module_argv("loadgen.stack.collector", "--port", "0", "--otlp-grpc-port", "0"),
        tmp_path / "collector.log",
    )
    collector.start(stdout_pipe=True)
    try:
        ready = collector.read_ready_line(15.0)
        url, grpc_url = str(ready["url"]), str(ready["otlp_grpc_url"])
        with httpx.Client(base_url=url, timeout=10) as http:
            for protocol in ("zipkin", "otlp-http", "otlp-grpc"):
                em = ReferenceEmitter(
                    url, f"ref-{protocol}", tmp_path / f"{protocol}.jsonl", rate_per_s=0,
                    schedule_delay_ms=50, service_name=f"svc-{protocol}", protocol=protocol,
                    grpc_endpoint=grpc_url if protocol == "otlp-grpc" else None,
                )  # fmt: skip
                assert em.emit_burst(25) == 25
                c = em.stop(timeout_s=20)
                s = agree(em, c)
                assert s.protocol == protocol and s.exported_trace_ids() and c.traces_exported == 25
                for tid in s.exported_trace_ids():
                    spans = http.get(f"/api/v2/trace/{tid}").json()
                    assert len(spans) == 3, (protocol, tid)
                    root = next(sp for sp in spans if "parentId" not in sp)
                    assert (root["name"], root["kind"]) == ("reference", "SERVER")
                    for sp in spans:
                        assert sp["traceId"] == tid
                        assert sp["localEndpoint"]["serviceName"] == f"svc-{protocol}"
                        assert sp["tags"]["loadgen.run_id"] == f"ref-{protocol}"
                        assert sp is root or sp["parentId"] == root["id"]
    finally:
        collector.stop()
