"""Envoy's tracer families (pure data): which propagation headers each honours, and where the
per-request sampled fact is read from in what the upstream received.

- `zipkin` (`envoy.tracers.zipkin`, Istio's `zipkin` provider): B3 (`X-B3-*`, `b3`), plus
  `traceparent` under `USE_B3_WITH_W3C_PROPAGATION`. Envoy always forwards B3 upstream, and the
  sampled fact is the forwarded B3 flag, else character 14 of the forwarded x-request-id.
- `opentelemetry` (`envoy.tracers.opentelemetry`, Istio's `opentelemetry` provider): W3C
  `traceparent`/`tracestate` only. B3 headers are forwarded untouched (they are the client's, not
  Envoy's decision), and character 14 of x-request-id is not the sampled fact (an incoming
  `traceparent ...-00` vetoes the export while character 14 may still read `9`): the sampled
  fact is the flag of the `traceparent` Envoy forwards. Measured on Envoy 1.40
  (tests/integration/test_header_matrix.py, /work/notes/H-tracer.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from loadgen.mesh.rule import xrid_decision

__all__ = [
    "TRACERS",
    "OtlpProtocol",
    "TracerFamily",
    "TracerTraits",
    "added_context_headers",
    "detect_tracer",
    "sampled_fact",
    "traceparent_flag",
]


class TracerFamily(StrEnum):
    ZIPKIN = "zipkin"
    OPENTELEMETRY = "opentelemetry"


class OtlpProtocol(StrEnum):
    """How the OpenTelemetry tracer exports: OTLP/gRPC (Istio's default, port 4317) or OTLP/HTTP
    (`/v1/traces`, port 4318)."""

    GRPC = "grpc"
    HTTP = "http"


@dataclass(frozen=True)
class TracerTraits:
    """What a tracer family honours and where its decision shows upstream."""

    family: TracerFamily
    envoy_name: str  # the HCM tracing provider name
    honours: tuple[str, ...]  # propagation headers the tracer reads (lower case)
    ignores: tuple[str, ...]  # propagation headers it forwards untouched
    decision_header: str  # where the upstream reads the sampled fact
    reads_request_id_mark: bool  # character 14 of x-request-id is the fallback sampled fact


_B3_HEADERS = ("x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3")
_W3C_HEADERS = ("traceparent", "tracestate")

TRACERS: dict[TracerFamily, TracerTraits] = {
    TracerFamily.ZIPKIN: TracerTraits(
        TracerFamily.ZIPKIN,
        "envoy.tracers.zipkin",
        honours=_B3_HEADERS,  # + traceparent under USE_B3_WITH_W3C_PROPAGATION
        ignores=_W3C_HEADERS,  # under the default USE_B3
        decision_header="x-b3-sampled / b3, else x-request-id character 14",
        reads_request_id_mark=True,
    ),
    TracerFamily.OPENTELEMETRY: TracerTraits(
        TracerFamily.OPENTELEMETRY,
        "envoy.tracers.opentelemetry",
        honours=_W3C_HEADERS,
        ignores=_B3_HEADERS,
        decision_header="traceparent (its sampled flag)",
        reads_request_id_mark=False,
    ),
}


def propagation_headers(family: TracerFamily, w3c: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(honoured, ignored-and-forwarded-untouched) propagation headers of a tracer family. `w3c`:
    the Zipkin tracer under USE_B3_WITH_W3C_PROPAGATION, which also reads the W3C trace context
    (traceparent, and the tracestate that travels with it) when no B3 header is present."""
    traits = TRACERS[family]
    honoured = traits.honours + (_W3C_HEADERS if w3c and family is TracerFamily.ZIPKIN else ())
    return honoured, tuple(h for h in traits.ignores if h not in honoured)


def traceparent_flag(value: str | None) -> str | None:
    """The sampled bit of a `traceparent` value as "1"/"0" (None when absent or malformed)."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[3]) != 2:
        return None
    try:
        return "1" if int(parts[3], 16) & 1 else "0"
    except ValueError:
        return None


def sampled_fact(family: TracerFamily, flag: str | None, request_id: str | None) -> bool | None:
    """The decision the upstream saw. `flag` is the forwarded sampled flag the tracer writes (B3
    `1`/`0`/`d` for zipkin, traceparent's `1`/`0` for opentelemetry). Zipkin falls back to
    Envoy's mark in x-request-id character 14; the OpenTelemetry tracer has no fallback."""
    if flag is not None:
        return flag in ("1", "d")
    if TRACERS[family].reads_request_id_mark:
        return xrid_decision(request_id)
    return None


def added_context_headers(sent: Mapping[str, str], echoed: Mapping[str, object]) -> tuple[str, ...]:
    """The propagation headers (lower case, sorted) the upstream saw that the client did not
    send: the ones a tracer added on the way."""
    added = {str(k).lower() for k in echoed} - {k.lower() for k in sent}
    return tuple(sorted(added & {*_B3_HEADERS, *_W3C_HEADERS}))


def detect_tracer(sent: Mapping[str, str], echoed: Mapping[str, object]) -> TracerFamily | None:
    """The tracer family that wrote the trace context the upstream saw, from one request's sent
    headers and their echo: Envoy's Zipkin tracer always adds B3 upstream, its OpenTelemetry
    tracer adds a `traceparent` and no B3. None when the echo shows neither (no echo, or the
    client sent the very headers it would tell apart)."""
    added = set(added_context_headers(sent, echoed))
    if added & set(_B3_HEADERS):
        return TracerFamily.ZIPKIN
    if "traceparent" in added:
        return TracerFamily.OPENTELEMETRY
    return None
