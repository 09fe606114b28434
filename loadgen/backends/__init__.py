"""Trace readers: one seam (`TraceBackend`) over the Zipkin v2, Jaeger `/api`, Jaeger `/api/v3` and
Grafana Tempo query APIs.

Every reader returns spans in Zipkin v2 JSON shape, keyed by normalized trace id; see base.py.
Build one from a `KIND:URL` spec with `parse_backend_spec` (factory.py; KIND: zipkin, jaeger,
jaeger-v3, tempo, auto). Every reader runs on one fetch/search engine (_engine.py).
"""

from loadgen.backends.base import (
    BackendError,
    BackendOptions,
    Fetched,
    FetchStatus,
    QueryStats,
    TraceBackend,
)
from loadgen.backends.factory import BackendDetectionError, parse_backend_spec
from loadgen.backends.jaeger import JaegerBackend
from loadgen.backends.jaeger_v3 import JaegerV3Backend, ParamStyle
from loadgen.backends.tempo import TempoBackend
from loadgen.backends.zipkin import ZipkinBackend

__all__ = [
    "BackendDetectionError",
    "BackendError",
    "BackendOptions",
    "FetchStatus",
    "Fetched",
    "JaegerBackend",
    "JaegerV3Backend",
    "ParamStyle",
    "QueryStats",
    "TempoBackend",
    "TraceBackend",
    "ZipkinBackend",
    "parse_backend_spec",
]
