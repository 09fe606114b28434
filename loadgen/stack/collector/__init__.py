"""Embedded Zipkin-v2-compatible collector: span store, aiohttp server, `python -m` entry point.

Contract: shared/specs/zipkin2-api.yaml. Start it with `python -m loadgen.stack.collector`.

Ingest: server.py (routes, POST handling, faults) -> decode.py (Content-Encoding, JSON, proto3)
-> normalize.py (validation, pure) -> store.py (SQLite, 202 after COMMIT; tables in schema.py).
OTLP: `POST /v1/traces` (server.py) and TraceService/Export (otlp_grpc.py, `--otlp-grpc-port`)
decode and map to Zipkin v2 in otlp.py (pure), then take the same path; 200/OK after COMMIT.
Queries: server.py -> store.py, with Zipkin's search semantics in query.py (pure). Bounds and
fault settings: limits.py; the request-head deadline and `start_server`: deadline.py.
"""

from loadgen.stack.collector.server import (
    DEFAULT_MAX_BODY_BYTES,
    Faults,
    IngestCounters,
    Limits,
    decode_proto_spans,
    make_app,
    start_server,
)
from loadgen.stack.collector.store import (
    SpanStore,
    SpanValidationError,
    StoreError,
    parse_annotation_query,
    validate_spans,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "Faults",
    "IngestCounters",
    "Limits",
    "SpanStore",
    "SpanValidationError",
    "StoreError",
    "decode_proto_spans",
    "make_app",
    "parse_annotation_query",
    "start_server",
    "validate_spans",
]
