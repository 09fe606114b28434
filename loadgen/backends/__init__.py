"""Trace readers: one seam (`TraceBackend`) over Zipkin and, later, Jaeger query APIs.

Every reader returns spans in Zipkin v2 JSON shape, keyed by normalized trace id; see base.py.
"""

from loadgen.backends.base import (
    BackendError,
    Fetched,
    FetchStatus,
    TraceBackend,
    parse_backend_spec,
)
from loadgen.backends.zipkin import ZipkinBackend

__all__ = [
    "BackendError",
    "FetchStatus",
    "Fetched",
    "TraceBackend",
    "ZipkinBackend",
    "parse_backend_spec",
]
