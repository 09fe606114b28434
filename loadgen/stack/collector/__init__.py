"""Embedded Zipkin-v2-compatible collector: span store, aiohttp server, `python -m` entry point.

Contract: shared/specs/zipkin2-api.yaml. Start it with `python -m loadgen.stack.collector`.
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
