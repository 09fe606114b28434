"""A minimal OTLP trace receiver for tests: OTLP/HTTP (`POST /v1/traces`, protobuf, chunked or
not) and OTLP/gRPC (`TraceService/Export`) on 127.0.0.1 free ports, stopped by the test.

It decodes with the real `opentelemetry-proto` classes and answers success as each protocol
specifies (HTTP 200 with an empty `ExportTraceServiceResponse`; gRPC OK). A cross-check
independent of the collector's OTLP ingest: what Envoy exported, as Envoy sent it.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(frozen=True)
class OtlpSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    protocol: str  # "http" or "grpc": how it arrived
    # Each AnyValue as the Python value it holds (Envoy's tags are strings; the OpenTelemetry SDK
    # also sends ints, e.g. the side-emitter's loadgen.ref_seq); an unset value reads "".
    attributes: dict[str, Any] = field(default_factory=dict)


def any_value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


def decode_export(request: Any, protocol: str) -> list[OtlpSpan]:
    """Every span of an ExportTraceServiceRequest, with its resource's service.name."""
    spans: list[OtlpSpan] = []
    for rs in request.resource_spans:
        resource = {a.key: any_value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for sp in ss.spans:
                spans.append(
                    OtlpSpan(
                        sp.trace_id.hex(), sp.span_id.hex(), sp.parent_span_id.hex(), sp.name,
                        KINDS.get(sp.kind, "?"), resource.get("service.name", ""), protocol,
                        {a.key: any_value(a.value) for a in sp.attributes},
                    )
                )  # fmt: skip
    return spans


class OtlpReceiver:
    """Collects spans from both protocols; `snapshot()` reads them under a lock."""

    def __init__(self) -> None:
        self.spans: list[OtlpSpan] = []
        self.exports = {"http": 0, "grpc": 0}
        self.content_types: set[str] = set()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._http_handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._servicer(), self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port("127.0.0.1:0")

    def _add(self, spans: list[OtlpSpan], protocol: str, content_type: str) -> None:
        with self._lock:
            self.spans.extend(spans)
            self.exports[protocol] += 1
            self.content_types.add(content_type)

    def _servicer(self) -> Any:
        receiver = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._add(decode_export(request, "grpc"), "grpc", "application/grpc")
                return trace_service_pb2.ExportTraceServiceResponse()

        return Servicer()

    def _http_handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(self._body())
                receiver._add(decode_export(request, "http"), "http", self.headers.get("content-type", ""))
                body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("content-length", "0")))
                out = b""
                while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                    out += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return out

        return Handler

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        self.grpc_server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.grpc_server.stop(grace=None)
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def snapshot(self) -> list[OtlpSpan]:
        with self._lock:
            return list(self.spans)
