"""What the upstream saw: parsing an httpbin-like echo of the request headers (pure), and whether
the x-request-id it saw is the one we sent. Tracer-aware (loadgen.mesh.tracer): under Envoy's
Zipkin tracer the context is the forwarded B3 (else x-request-id character 14), under the
OpenTelemetry tracer the forwarded `traceparent` (B3 headers there are the client's, untouched)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from loadgen.mesh.headers import X_REQUEST_ID
from loadgen.mesh.ids import is_hex_id
from loadgen.mesh.tracer import TracerFamily, sampled_fact

__all__ = ["UpstreamView", "parse_b3_single", "parse_echo", "parse_traceparent", "same_request_id"]


@dataclass(frozen=True)
class UpstreamView:
    """Trace context as received by the upstream (parsed from an httpbin-like header echo)."""

    trace_id: str | None
    span_id: str | None
    flag: str | None  # "1", "0", "d" or None
    request_id: str | None
    tracer: TracerFamily = TracerFamily.ZIPKIN

    @property
    def sampled(self) -> bool | None:
        """The decision propagated upstream: the tracer's forwarded flag (B3 for zipkin,
        traceparent for opentelemetry), else (zipkin only) Envoy's mark in x-request-id."""
        return sampled_fact(self.tracer, self.flag, self.request_id)


def parse_b3_single(value: str) -> tuple[str | None, str | None, str | None]:
    """`{trace}-{span}[-{flag}[-{parent}]]` or a bare flag -> (trace, span, flag)."""
    parts = value.strip().lower().split("-")
    if len(parts) == 1:
        return None, None, parts[0] or None
    flag = parts[2] if len(parts) >= 3 else None
    return parts[0], parts[1], flag


def parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """W3C `{version}-{trace}-{parent}-{flags}` -> (trace, span, "1"/"0"); None if malformed,
    including the all-zero trace or parent id W3C declares invalid (a context no tracer continues:
    under the OpenTelemetry tracer it is the client's header forwarded untouched, no decision)."""
    parts = value.strip().lower().split("-")
    if len(parts) < 4 or not is_hex_id(parts[1], (32,)) or not is_hex_id(parts[2], (16,)):
        return None
    if not parts[1].strip("0") or not parts[2].strip("0"):
        return None
    try:
        flags = int(parts[3], 16)
    except ValueError:
        return None
    return parts[1], parts[2], "1" if flags & 1 else "0"


def parse_echo(headers: Mapping[str, object], tracer: TracerFamily = TracerFamily.ZIPKIN) -> UpstreamView:
    """Read an echo of request headers (any case).

    Zipkin: `b3` wins over `X-B3-*` as it does in Envoy; a `traceparent` counts only when no B3
    context came along (Envoy always adds B3 upstream). OpenTelemetry: only the forwarded
    `traceparent` counts (no trace context when it is absent or malformed).

    Values may be strings (httpbin) or lists of strings (go-httpbin); the first value counts."""
    lower: dict[str, str] = {}
    for key, value in headers.items():
        if isinstance(value, list):
            value = value[0] if value else ""
        lower[str(key).lower()] = str(value)
    xrid = lower.get(X_REQUEST_ID)
    if tracer is TracerFamily.OPENTELEMETRY:
        parsed = parse_traceparent(lower.get("traceparent", ""))
        if parsed is None:
            return UpstreamView(None, None, None, xrid, tracer)
        return UpstreamView(*parsed, xrid, tracer)
    if "b3" in lower:
        trace, span, flag = parse_b3_single(lower["b3"])
        return UpstreamView(trace, span, flag, xrid)
    if not ({"x-b3-traceid", "x-b3-sampled"} & lower.keys()) and "traceparent" in lower:
        parsed = parse_traceparent(lower["traceparent"])
        if parsed is not None:
            return UpstreamView(*parsed, xrid)
    flag = lower.get("x-b3-sampled")
    if flag is not None:
        flag = {"true": "1", "false": "0"}.get(flag.lower(), flag.lower())
    trace = lower.get("x-b3-traceid")
    span = lower.get("x-b3-spanid")
    return UpstreamView(trace.lower() if trace else None, span.lower() if span else None, flag, xrid)


def same_request_id(sent: str | None, echoed: str | None) -> bool:
    """The upstream saw the id we sent: equal, ignoring char 14 (where Envoy writes its
    decision into a kept UUID) and case."""
    if not sent or not echoed or len(sent) != len(echoed):
        return False
    a, b = sent.lower(), echoed.lower()
    return a[:14] + a[15:] == b[:14] + b[15:]
