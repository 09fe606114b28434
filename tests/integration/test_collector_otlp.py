"""The collector's OTLP ingest as senders use it: `python -m loadgen.stack.collector --otlp-grpc-port 0`
in a subprocess, fed by the real OpenTelemetry OTLP exporters (HTTP protobuf and gRPC, gzip) and
by hand-made bodies, read back through its Zipkin API."""

from __future__ import annotations

import gzip
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

MAX_BODY = 64 * 1024
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTO = "application/x-protobuf"
JSON = "application/json"


@dataclass
class Collector:
    proc: subprocess.Popen[str]
    url: str
    grpc_target: str  # host:port

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout=15)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def stats(self) -> dict[str, Any]:
        ingest: dict[str, Any] = httpx.get(f"{self.url}/loadgen/stats", timeout=10).json()["ingest"]
        return ingest

    def trace(self, trace_id: str) -> httpx.Response:
        return httpx.get(f"{self.url}/api/v2/trace/{trace_id}", timeout=10)


def start(data_dir: Path, *args: str) -> Collector:
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "loadgen.stack.collector", "--port", "0", "--otlp-grpc-port", "0"]
    proc = subprocess.Popen(
        [*argv, "--data-dir", str(data_dir), "--max-body-bytes", str(MAX_BODY), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if readable else ""
    if not line:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        pytest.fail("collector printed no ready line")
    ready = json.loads(line)
    assert ready["otlp_grpc_url"].startswith("http://127.0.0.1:")  # loopback, like the HTTP port
    return Collector(proc, ready["url"], ready["otlp_grpc_url"].removeprefix("http://"))


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    c = start(tmp_path_factory.mktemp("otlp"))
    yield c
    c.stop()


@pytest.fixture
def channel(collector: Collector) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(collector.grpc_target) as ch:
        yield ch


def export_raw(channel: grpc.Channel, body: bytes, compression: grpc.Compression | None = None) -> bytes:
    method = channel.unary_unary(EXPORT)  # bytes in, bytes out
    answer: bytes = method(body, timeout=10, compression=compression)
    return answer


def sdk_trace(service: str) -> tuple[str, list[Any]]:
    """A root SERVER span and a CLIENT child with attributes, an event and an error status, as the
    SDK hands them to exporters."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("loadgen.test", "9.9")
    with tracer.start_as_current_span("GET /headers", kind=SpanKind.SERVER) as root:
        root.set_attribute("loadgen.run_id", "run-1")
        with tracer.start_as_current_span("egress", kind=SpanKind.CLIENT) as child:
            child.set_attribute("peer.service", "backend")
            child.set_attribute("http.status_code", 503)
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "upstream reset"))
    provider.shutdown()
    spans = list(memory.get_finished_spans())
    return format(spans[0].context.trace_id, "032x"), spans


def check_trace(collector: Collector, trace_id: str, service: str, spans: list[Any]) -> None:
    answer = collector.trace(trace_id)
    assert answer.status_code == 200, answer.text
    by_name = {s["name"]: s for s in answer.json()}
    child_sdk, root_sdk = spans  # the child ends first
    root, child = by_name["get /headers"], by_name["egress"]  # Zipkin lowercases span names
    assert root["id"] == format(root_sdk.context.span_id, "016x")
    assert "parentId" not in root and root["kind"] == "SERVER"
    assert root["localEndpoint"] == {"serviceName": service}
    assert root["tags"]["loadgen.run_id"] == "run-1"
    assert root["tags"]["otel.scope.name"] == "loadgen.test"
    assert root["timestamp"] == root_sdk.start_time // 1000
    assert root["duration"] == (root_sdk.end_time - root_sdk.start_time) // 1000
    assert child["parentId"] == root["id"] and child["kind"] == "CLIENT"
    assert child["remoteEndpoint"] == {"serviceName": "backend"}
    assert child["tags"]["http.status_code"] == "503"
    assert child["tags"]["otel.status_code"] == "ERROR"
    assert child["tags"]["error"] == "upstream reset"
    assert child["annotations"] == [
        {"timestamp": child_sdk.events[0].timestamp // 1000, "value": '{"retry":{"attempt":"2"}}'}
    ]


@pytest.mark.parametrize(
    "make_exporter",
    [
        pytest.param(
            lambda c: HttpExporter(endpoint=f"{c.url}/v1/traces", compression=HttpCompression.Gzip), id="http"
        ),
        pytest.param(
            lambda c: GrpcExporter(endpoint=c.grpc_target, insecure=True, compression=grpc.Compression.Gzip),
            id="grpc",
        ),
    ],
)
def test_real_exporter_round_trip(
    collector: Collector, make_exporter: Any, request: pytest.FixtureRequest
) -> None:
    service = f"svc-{request.node.callspec.id}"
    trace_id, spans = sdk_trace(service)
    exporter: SpanExporter = make_exporter(collector)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    check_trace(collector, trace_id, service, spans)


def json_body(trace_id: str, span_id: str = "00f067aa0ba902b7") -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id.upper(),
                                "spanId": span_id,
                                "name": "by hand",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000002500000",
                            }
                        ]
                    }
                ],
            }
        ]
    }


def test_otlp_json_gzip(collector: Collector) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    answer = httpx.post(
        f"{collector.url}/v1/traces",
        content=gzip.compress(json.dumps(json_body(trace_id)).encode()),
        headers={"content-type": JSON, "content-encoding": "gzip"},
    )
    assert (answer.status_code, answer.headers["content-type"], answer.json()) == (200, JSON, {})
    (stored,) = collector.trace(trace_id).json()
    assert stored == {
        "traceId": trace_id,
        "id": "00f067aa0ba902b7",
        "kind": "SERVER",
        "name": "by hand",
        "timestamp": 1_700_000_000_000_000,
        "duration": 2500,
        "localEndpoint": {"serviceName": "json-svc"},
    }


def proto_request(trace_id: bytes, span_id: bytes = b"\x01" * 8) -> bytes:
    span = Span(trace_id=trace_id, span_id=span_id, name="p", start_time_unix_nano=1_700_000_000_000_000_000)
    body: bytes = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    ).SerializeToString()
    return body


GOOD_TRACE = bytes.fromhex("a1" * 16)
LONG_BODY = proto_request(bytes.fromhex("b2" * 16))


@pytest.mark.parametrize(
    "content_type, encoding, body, status, counter",
    [
        pytest.param(PROTO, "", LONG_BODY[:-3], 400, "otlp_http_bad_requests", id="truncated-protobuf"),
        pytest.param(
            PROTO, "", proto_request(b"\x01" * 15), 400, "otlp_http_bad_requests", id="15-byte-trace-id"
        ),
        pytest.param(
            PROTO,
            "",
            proto_request(GOOD_TRACE, b"\x02" * 4),
            400,
            "otlp_http_bad_requests",
            id="4-byte-span-id",
        ),
        pytest.param(
            JSON,
            "",
            json.dumps({"resourceSpans": "all"}).encode(),
            400,
            "otlp_http_bad_requests",
            id="json-wrong-type",
        ),
        pytest.param(
            JSON,
            "",
            json.dumps(json_body("zz" * 16)).encode(),
            400,
            "otlp_http_bad_requests",
            id="json-non-hex-id",
        ),
        pytest.param(
            PROTO, "gzip", b"\x1f\x8b\x08\x00garbage", 400, "otlp_http_bad_requests", id="gzip-garbage"
        ),
        pytest.param("text/plain", "", b"hello", 415, "otlp_http_unsupported_media_type", id="text-plain"),
        pytest.param(PROTO, "br", LONG_BODY, 415, "otlp_http_unsupported_media_type", id="brotli"),
        pytest.param(PROTO, "", b"\x0a" + b"\xff" * (MAX_BODY + 10), 413, "too_large", id="oversized"),
        pytest.param(
            PROTO, "gzip", gzip.compress(bytes(MAX_BODY * 4)), 413, "too_large", id="decompression-bomb"
        ),
    ],
)
def test_bad_otlp_http_input(
    collector: Collector, content_type: str, encoding: str, body: bytes, status: int, counter: str
) -> None:
    good = httpx.post(
        f"{collector.url}/v1/traces", content=proto_request(GOOD_TRACE), headers={"content-type": PROTO}
    )
    assert good.status_code == 200
    before = collector.stats()
    headers = {"content-type": content_type, **({"content-encoding": encoding} if encoding else {})}
    answer = httpx.post(f"{collector.url}/v1/traces", content=body, headers=headers)
    assert answer.status_code == status
    reply_type = JSON if content_type == JSON else PROTO
    assert answer.headers["content-type"] == reply_type
    message = (
        json.loads(answer.content)["message"]
        if reply_type == JSON
        else status_pb2.Status.FromString(answer.content).message
    )
    assert message  # a reason, in the request's encoding
    after = collector.stats()
    assert after[counter] == before[counter] + 1
    assert after["spans_received"] == before["spans_received"]
    # Nothing else is lost: what was accepted is still there, and the next request is served.
    assert collector.trace(GOOD_TRACE.hex()).status_code == 200
    again = httpx.post(
        f"{collector.url}/v1/traces",
        content=proto_request(GOOD_TRACE, b"\x03" * 8),
        headers={"content-type": PROTO},
    )
    assert again.status_code == 200


@pytest.mark.parametrize(
    "body, code",
    [
        pytest.param(LONG_BODY[:-3], grpc.StatusCode.INVALID_ARGUMENT, id="truncated"),
        pytest.param(b"\xff" * 32, grpc.StatusCode.INVALID_ARGUMENT, id="garbage"),
        pytest.param(proto_request(b"\x01" * 17), grpc.StatusCode.INVALID_ARGUMENT, id="17-byte-trace-id"),
        pytest.param(
            proto_request(GOOD_TRACE, bytes(8)), grpc.StatusCode.INVALID_ARGUMENT, id="zero-span-id"
        ),
        pytest.param(b"\x0a" + b"\xff" * (MAX_BODY + 10), grpc.StatusCode.RESOURCE_EXHAUSTED, id="oversized"),
    ],
)
def test_bad_otlp_grpc_input(
    collector: Collector, channel: grpc.Channel, body: bytes, code: grpc.StatusCode
) -> None:
    before = collector.stats()
    with pytest.raises(grpc.RpcError) as caught:
        export_raw(channel, body)
    assert caught.value.code() == code
    after = collector.stats()
    invalid = 1 if code == grpc.StatusCode.INVALID_ARGUMENT else 0  # grpcio refuses oversize before us
    assert after["otlp_grpc_invalid_arguments"] == before["otlp_grpc_invalid_arguments"] + invalid
    assert after["spans_received"] == before["spans_received"]
    assert export_raw(channel, proto_request(GOOD_TRACE, b"\x04" * 8), grpc.Compression.Gzip) == b""


def test_restart_keeps_what_was_acknowledged(tmp_path: Path) -> None:
    first = start(tmp_path)
    try:
        http_trace, grpc_trace = bytes.fromhex("c3" * 16), bytes.fromhex("d4" * 16)
        answer = httpx.post(
            f"{first.url}/v1/traces", content=proto_request(http_trace), headers={"content-type": PROTO}
        )
        assert answer.status_code == 200
        with grpc.insecure_channel(first.grpc_target) as ch:
            assert export_raw(ch, proto_request(grpc_trace)) == b""
    finally:
        first.stop(signal.SIGKILL)  # no shutdown: only what was committed before the answers counts
    second = start(tmp_path)
    try:
        for trace_id in (http_trace, grpc_trace):
            (span,) = second.trace(trace_id.hex()).json()
            assert span["traceId"] == trace_id.hex()
    finally:
        second.stop(signal.SIGTERM)


def test_injected_faults_are_retryable_and_store_nothing(tmp_path: Path) -> None:
    c = start(tmp_path, "--error-rate", "1", "--seed", "1")
    try:
        trace = bytes.fromhex("e5" * 16)
        answer = httpx.post(
            f"{c.url}/v1/traces", content=proto_request(trace), headers={"content-type": PROTO}
        )
        assert answer.status_code == 503  # OTLP: retryable
        assert status_pb2.Status.FromString(answer.content).message == "injected fault: error_rate"
        with grpc.insecure_channel(c.grpc_target) as ch, pytest.raises(grpc.RpcError) as caught:
            export_raw(ch, proto_request(trace))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert c.trace(trace.hex()).status_code == 404
        assert c.stats()["fault_errors"] == 2
    finally:
        c.stop()


def test_grpc_port_in_use_is_one_clear_error(collector: Collector, tmp_path: Path) -> None:
    port = collector.grpc_target.rsplit(":", 1)[1]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "loadgen.stack.collector", "--port", "0", "--otlp-grpc-port", port],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"collector: OTLP/gRPC: cannot listen on 127.0.0.1:{port}")
    )
    assert time.monotonic() - started < 20
