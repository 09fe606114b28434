"""Headers for one request of a mode, with fresh ids (pure: ids come from the caller's RNG and
clock)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from loadgen.mesh.headers import X_REQUEST_ID
from loadgen.mesh.ids import (
    IdStyle,
    craft_request_id,
    forced_request_id,
    k6_trace_id,
    new_span_id,
    new_trace_id,
    non_uuid_request_id,
    random_request_id,
)
from loadgen.mesh.modes import MODE_SPECS, HeaderMode
from loadgen.mesh.rule import envoy_random_sampled, sampling_threshold
from loadgen.mesh.sends import B3Form, Sends, XridKind
from loadgen.mesh.tracer import TracerFamily

__all__ = ["DEFAULT_ENCODE_OPTIONS", "EncodeOptions", "Injection", "encode"]


@dataclass(frozen=True)
class EncodeOptions:
    """How ids are generated (the mode decides which headers carry them)."""

    id_style: IdStyle = IdStyle.RANDOM  # applies to 128-bit trace ids (k6 has no 64-bit form)
    #: The gateway's sampling percent that crafted x-request-ids target (None: ids are random
    #: and no prediction is recorded).
    crafted_percent: float | None = None
    crafted_sampled_fraction: float = 0.5  # share of crafted ids meant to be sampled
    #: The mesh's tracer: which sent context `Injection` reports as the one Envoy continues
    #: (the OpenTelemetry tracer reads only a valid traceparent, Zipkin B3 first).
    tracer: TracerFamily = TracerFamily.ZIPKIN
    clock_ns: Callable[[], int] = time.time_ns


DEFAULT_ENCODE_OPTIONS = EncodeOptions()


class Injection(msgspec.Struct, frozen=True, gc=False):
    """The trace context one request carries out of the generator. (A msgspec Struct, not a
    frozen dataclass: it is built for every request, and a frozen dataclass's __init__ sets each
    field through object.__setattr__, five times slower.)"""

    headers: dict[str, str]
    trace_id: str | None = None  # the trace id Envoy continues when it honours our headers
    span_id: str | None = None
    flag: str | None = None  # the sampled flag sent ("1", "0", "d"; traceparent 01/00 -> 1/0)
    request_id: str | None = None  # the x-request-id sent (ledger `xrid_sent`)
    predicted: bool | None = None  # Envoy's decision on request_id at the crafted percent


def _trace_id(rng: random.Random, bits: int, options: EncodeOptions) -> str:
    if bits == 128 and options.id_style is IdStyle.K6:
        return k6_trace_id(rng, options.clock_ns())
    return new_trace_id(rng, bits)


def _request_id(kind: XridKind, rng: random.Random, options: EncodeOptions) -> tuple[str, bool | None]:
    percent = options.crafted_percent
    if kind is XridKind.NON_UUID:
        return non_uuid_request_id(rng), None
    if kind is XridKind.FORCED:
        rid = forced_request_id(rng)
    elif kind in (XridKind.CRAFTED, XridKind.NO_DASHES) and percent is not None:
        want = rng.random() < options.crafted_sampled_fraction
        threshold = sampling_threshold(percent)
        want = want if 0 < threshold < 10000 else threshold >= 10000  # the only possible answer
        rid = craft_request_id(rng, percent, want, dashes=kind is not XridKind.NO_DASHES)
    else:
        rid = random_request_id(rng)
        if kind is XridKind.NO_DASHES:
            rid = rid.replace("-", "")
    return rid, (None if percent is None else envoy_random_sampled(rid, percent))


def _traceparent(
    sends: Sends,
    rng: random.Random,
    options: EncodeOptions,
    headers: dict[str, str],
    b3: tuple[str | None, str | None, str | None],
) -> tuple[str | None, str | None, str | None]:
    """Adds traceparent (and tracestate) to `headers`; returns the (trace, span, flag) Envoy
    continues. Zipkin: B3 wins when both are sent, its ids are the ones to follow; the
    OpenTelemetry tracer follows only traceparent. An all-zero trace id is no id any tracer
    continues, and carries no flag anyone reads."""
    w3c_trace, w3c_span = _trace_id(rng, 128, options), new_span_id(rng)
    headers["traceparent"] = f"00-{'0' * 32 if sends.w3c_invalid else w3c_trace}-{w3c_span}-{sends.w3c}"
    if sends.tracestate:
        headers["tracestate"] = f"loadgen={w3c_span},congo=t61rcWkgMzE"
    otel = options.tracer is TracerFamily.OPENTELEMETRY
    if sends.w3c_invalid:
        return b3 if sends.b3 and not otel else (b3[0], b3[1], None)
    if otel or not sends.b3_ids:
        return w3c_trace, w3c_span, "1" if sends.w3c == "01" else "0"
    return b3


#: Per mode, what it sends and the flag it sends (ModeSpec.flag, a property), looked up once.
_SENDS: dict[HeaderMode, tuple[Sends, str | None]] = {
    mode: (spec.sends, spec.flag) for mode, spec in MODE_SPECS.items()
}


def encode(
    mode: HeaderMode, rng: random.Random, options: EncodeOptions = DEFAULT_ENCODE_OPTIONS
) -> Injection:
    """Headers for one request of the given mode, with fresh ids."""
    sends, flag = _SENDS[mode]
    headers: dict[str, str] = {}
    trace_id = span_id = None
    if sends.b3_ids:
        trace_id, span_id = _trace_id(rng, sends.trace_bits, options), new_span_id(rng)
        parent = new_span_id(rng) if sends.b3_parent else None
        if sends.b3_invalid_trace:
            trace_id = "not-a-trace-" + trace_id[:8]
        if sends.b3 is B3Form.SINGLE:
            value = f"{trace_id}-{span_id}"
            if sends.b3_flag is not None:
                value += f"-{sends.b3_flag}" + (f"-{parent}" if parent else "")
            headers["b3"] = value
        else:
            headers["X-B3-TraceId"], headers["X-B3-SpanId"] = trace_id, span_id
            if parent:
                headers["X-B3-ParentSpanId"] = parent
    if sends.b3 is B3Form.MULTI and sends.b3_flag is not None:
        headers["X-B3-Sampled"] = sends.b3_flag
    if sends.b3 is B3Form.SINGLE and not sends.b3_ids and sends.b3_flag is not None:
        headers["b3"] = sends.b3_flag
    if sends.b3_debug_header:
        headers["X-B3-Flags"] = "1"
    if sends.w3c is not None:
        trace_id, span_id, flag = _traceparent(sends, rng, options, headers, (trace_id, span_id, flag))
    if sends.force_trace:
        headers["x-envoy-force-trace"] = "true"
    if sends.client_trace_id:
        headers["x-client-trace-id"] = random_request_id(rng)
    request_id = predicted = None
    if sends.xrid is not None:
        request_id, predicted = _request_id(sends.xrid, rng, options)
        headers[X_REQUEST_ID] = request_id
    return Injection(headers, trace_id, span_id, flag, request_id, predicted)
