"""OTLP/gRPC ingest: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on its own port
(Istio's default OTLP transport; 4317 by convention, a free port here), served by grpcio's asyncio
server on the collector's event loop and sharing the HTTP side's ingest (`_Collector.ingest`:
faults, then one store transaction).

Answers (OTLP specification, "OTLP/gRPC Response"): OK with an empty ExportTraceServiceResponse
only once the spans are committed; INVALID_ARGUMENT for a body that does not decode or carries a
malformed id (counted in `ingest.otlp_grpc_invalid_arguments`); UNAVAILABLE for an injected
fault (retryable); INTERNAL when the store cannot keep the batch (nothing stored). gzip request
compression is grpcio's own. A message over `max_message_bytes` after decompression is refused
by grpcio with RESOURCE_EXHAUSTED before the handler runs, as are calls beyond
`MAX_CONCURRENT_EXPORTS` at once. The request is handed over as bytes and decoded here, so a
malformed body is an INVALID_ARGUMENT rather than grpcio's deserializer failure.
"""

from __future__ import annotations

from typing import Any

import grpc

from loadgen.stack.collector import otlp
from loadgen.stack.collector.decode import BadRequest
from loadgen.stack.collector.server import COLLECTOR_KEY
from loadgen.stack.collector.store import SpanValidationError

__all__ = ["MAX_CONCURRENT_EXPORTS", "SERVICE", "start_otlp_grpc"]

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
MAX_CONCURRENT_EXPORTS = 16  # beyond this many Export calls at once: RESOURCE_EXHAUSTED
_FAILURE_CODES = {503: grpc.StatusCode.UNAVAILABLE, 500: grpc.StatusCode.INTERNAL}


def _handler(app: Any) -> Any:
    collector = app[COLLECTOR_KEY]
    counters = collector.counters

    async def export(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        counters.otlp_grpc_exports += 1
        try:
            spans = otlp.request_to_structs(otlp.parse_proto(request))  # mapped and normalized
        except (BadRequest, SpanValidationError) as exc:
            counters.otlp_grpc_invalid_arguments += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        del request
        failure = await collector.ingest(spans)
        if failure is not None:
            status, message = failure
            await context.abort(_FAILURE_CODES.get(status, grpc.StatusCode.INTERNAL), message)
        return otlp.success_body(otlp.PROTO_TYPE)

    # No (de)serializers: the handler takes and returns the raw message bytes.
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )


async def start_otlp_grpc(
    app: Any, host: str, port: int, max_message_bytes: int
) -> tuple[grpc.aio.Server, str]:
    """Serve TraceService/Export for the collector app `app` (make_app's) on host:port (0 = a
    free port). Returns the started server (`await server.stop(grace)`) and `http://host:port`."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a second listener
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_EXPORTS,
    )
    server.add_generic_rpc_handlers((_handler(app),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises when it cannot bind
        raise OSError(f"OTLP/gRPC: cannot listen on {address}: {exc}") from exc
    if not bound:
        raise OSError(f"OTLP/gRPC: cannot listen on {address}")
    await server.start()
    url_host = f"[{host}]" if ":" in host else host
    return server, f"http://{url_host}:{bound}"
