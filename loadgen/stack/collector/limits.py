"""What the collector bounds and what it breaks on purpose: `Limits` (resource bounds of the HTTP
layer), `Faults` (deliberate ingest failures) with the `TokenBucket` behind `Faults.ingest_limit`,
and the `IngestCounters` that say what happened to span POSTs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Faults", "IngestCounters", "Limits", "TokenBucket"]


@dataclass(frozen=True)
class Faults:
    """Deliberate ingest failures, all off by default.

    drop_probability: answer 202 but discard each span with this probability (silent loss).
    added_latency_ms: delay every span POST answer by this much (slow backend).
    error_rate: answer 503 to this fraction of valid POSTs, storing nothing (failed delivery).
    seed: seeds the one random.Random behind both draws, so a run is reproducible.
    ingest_limit: spans/s the collector keeps (a token bucket holding one second of spans, full
        at start; 0 = no limit). Spans beyond it are answered **202 and discarded**, counted in
        `ingest.limited_spans` and the store's `spans_dropped`: an overloaded collector whose
        queue is full (Jaeger's collector drops and still answers 202). A 429/503 would lose the
        same spans (Envoy's Zipkin tracer does not retry a report) but would show up in the
        sender's failure counters; a silent drop is the case only read-back can find, which is
        what capacity runs must prove they detect. The reference emitter likewise sees "exported".
    """

    drop_probability: float = 0.0
    added_latency_ms: float = 0.0
    error_rate: float = 0.0
    seed: int | None = None
    ingest_limit: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop_probability", "error_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.added_latency_ms < 0:
            raise ValueError(f"added_latency_ms must be >= 0, got {self.added_latency_ms}")
        if not 0.0 <= self.ingest_limit < float("inf"):
            raise ValueError(f"ingest_limit must be a finite number of spans/s >= 0, got {self.ingest_limit}")


@dataclass(frozen=True)
class Limits:
    """Resource bounds of the HTTP layer (the store bounds its own memory).

    header_timeout_s: a request head must be complete this long after its first byte, else the
        connection is closed (slowloris). Idle keep-alive connections are not affected.
    body_timeout_s: a span POST body must be read completely within this long, else 408 and the
        connection is closed.
    max_buffered_bytes: span bodies being read or decoded at the same time hold at most this
        many bytes together (wire size; a declared content-length is reserved up front); a POST
        that would go over it is answered 503 with Retry-After and its connection closed.
        0 means 4 x max_body_bytes. Must be at least max_body_bytes.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_buffered_bytes: int = 0

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not 0.0 < value < float("inf"):
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value}")
        if self.max_buffered_bytes < 0:
            raise ValueError(f"max_buffered_bytes must be >= 0, got {self.max_buffered_bytes}")

    def buffered_cap(self, max_body_bytes: int) -> int:
        cap = self.max_buffered_bytes or 4 * max_body_bytes
        if cap < max_body_bytes:
            raise ValueError(
                f"max_buffered_bytes ({cap}) must be >= max_body_bytes ({max_body_bytes}): "
                "a body of the maximum size could never be read"
            )
        return cap


@dataclass
class IngestCounters:
    """What happened to span POSTs at the HTTP layer and OTLP/gRPC exports (the store counts what
    it kept). Counters without a protocol in their name count Zipkin and OTLP/HTTP POSTs alike
    (spans_received and the fault and store counters count OTLP/gRPC too)."""

    posts: int = 0  # Zipkin POST /api/v2/spans
    spans_received: int = 0  # valid spans decoded, before faults
    bad_requests: int = 0  # 400 to a Zipkin POST
    otlp_http_posts: int = 0  # POST /v1/traces
    otlp_http_bad_requests: int = 0  # 400: undecodable body, wrong JSON types, malformed ids
    otlp_http_unsupported_media_type: int = 0  # 415: not application/x-protobuf or application/json
    otlp_grpc_exports: int = 0  # TraceService/Export calls that reached the handler
    otlp_grpc_invalid_arguments: int = 0  # answered INVALID_ARGUMENT (the OTLP/HTTP 400 cases)
    too_large: int = 0  # 413
    unsupported_media_type: int = 0  # 415
    fault_errors: int = 0  # 503 answered on purpose
    fault_error_spans: int = 0  # spans inside those 503'd POSTs
    limited_spans: int = 0  # answered 202 but discarded: over Faults.ingest_limit
    store_errors: int = 0  # 500: the store could not keep the batch (disk full, I/O error)
    store_error_spans: int = 0  # spans inside those POSTs: none of them stored
    busy: int = 0  # 503 + Retry-After: over Limits.max_buffered_bytes
    body_timeouts: int = 0  # 408: the body did not arrive within Limits.body_timeout_s


class TokenBucket:
    """`rate` tokens per second, holding at most `capacity` (full at start); `take(n)` returns how
    many of n are granted (whole tokens only). `clock` is injectable for tests."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError(f"rate and capacity must be > 0, got {rate}, {capacity}")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._last = float(clock())

    def take(self, n: int) -> int:
        now = float(self._clock())
        self._tokens = min(self.capacity, self._tokens + max(0.0, now - self._last) * self.rate)
        self._last = now
        granted = min(n, int(self._tokens))
        self._tokens -= granted
        return granted
