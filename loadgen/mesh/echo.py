"""What the upstream saw: parsing an httpbin-like echo of the request headers (pure), and whether
the x-request-id it saw is the one we sent. Tracer-aware (loadgen.mesh.tracer): under Envoy's
Zipkin tracer the context is the forwarded B3 (else x-request-id character 14), under the
OpenTelemetry tracer the forwarded `traceparent` (B3 headers there are the client's, untouched)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec
from msgspec import UNSET, UnsetType

from loadgen.mesh.headers import X_REQUEST_ID
from loadgen.mesh.ids import is_hex_id
from loadgen.mesh.tracer import TracerFamily, sampled_fact

__all__ = [
    "EchoContext",
    "UpstreamView",
    "echo_context",
    "parse_b3_single",
    "parse_echo",
    "parse_echo_body",
    "parse_traceparent",
    "same_request_id",
]


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
    get = lower.get
    context = _context(
        tracer, get(X_REQUEST_ID), get("b3"), get("x-b3-traceid"), get("x-b3-spanid"), get("x-b3-sampled"),
        get("traceparent"),
    )  # fmt: skip
    return UpstreamView(*context, tracer)


#: What an echo shows the upstream saw: (trace id, span id, flag, x-request-id), UpstreamView's
#: fields but the tracer.
EchoContext = tuple[str | None, str | None, str | None, str | None]


_B3_SAMPLED_WORDS = {"true": "1", "false": "0"}


def _context(
    tracer: TracerFamily,
    xrid: str | None,
    b3: str | None,
    b3_trace: str | None,
    b3_span: str | None,
    b3_sampled: str | None,
    traceparent: str | None,
) -> EchoContext:
    """The context from the (first) values of the headers parse_echo reads, None for an absent
    header."""
    if tracer is TracerFamily.OPENTELEMETRY:
        parsed = parse_traceparent(traceparent or "")
        if parsed is None:
            return None, None, None, xrid
        return *parsed, xrid
    if b3 is not None:
        return *parse_b3_single(b3), xrid
    if b3_trace is None and b3_sampled is None and traceparent is not None:
        parsed = parse_traceparent(traceparent)
        if parsed is not None:
            return *parsed, xrid
    flag = b3_sampled
    if flag is not None:
        flag = flag.lower()
        flag = _B3_SAMPLED_WORDS.get(flag, flag)
    return b3_trace.lower() if b3_trace else None, b3_span.lower() if b3_span else None, flag, xrid


# --- the generator's fast path ---------------------------------------------------------------------
#
# Every response of a run is an echo to read (loadgen.traffic.user), and `json.loads` of the whole
# body plus `parse_echo`'s lowercasing of every header was most of the traced user's own work per
# request. `echo_context` decodes only the headers `parse_echo` reads, with msgspec, from the
# echo's `headers` object lowercased as bytes (msgspec skips the other headers without building
# them). It answers only where that is provably the same as `parse_echo` of `json.loads`, and
# None otherwise (the caller then takes the general path):
# - the `headers` object is ASCII without a backslash, so `bytes.lower()` is `str.lower()` of
#   every key and value and no key is spelled with an escape;
# - its `x-request-id` value, the one value parse_echo keeps as sent, is read back in its own
#   case at the same offset of the original bytes (lowercasing keeps every offset), when that
#   value occurs once in the object (so its one occurrence is the header's);
# - any other shape (not an object, a value that is not a string or a list of strings, invalid
#   JSON, NaN) fails msgspec's typed decode.


_Value = str | list[str] | UnsetType


class _EchoHeaders(msgspec.Struct, gc=False):
    """The headers `parse_echo` reads, from the lowercased `headers` object (UNSET: absent; a
    null is no value of these types, so it fails the decode: parse_echo reads it as "None")."""

    x_request_id: _Value = msgspec.field(name="x-request-id", default=UNSET)
    b3: _Value = UNSET
    x_b3_traceid: _Value = msgspec.field(name="x-b3-traceid", default=UNSET)
    x_b3_spanid: _Value = msgspec.field(name="x-b3-spanid", default=UNSET)
    x_b3_sampled: _Value = msgspec.field(name="x-b3-sampled", default=UNSET)
    traceparent: _Value = UNSET


class _Echo(msgspec.Struct, gc=False):
    """An echo's `headers` value, undecoded (an empty Raw when the key is absent)."""

    headers: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


#: The quoted names `_EchoHeaders` reads: with no backslash in the object, a quoted name can only
#: be a key (or a whole value equal to it), so one occurring twice means a header given twice.
_KEYS = tuple(f'"{f.encode_name}"'.encode() for f in msgspec.structs.fields(_EchoHeaders))
_ECHO = msgspec.json.Decoder(_Echo)
_ECHO_HEADERS = msgspec.json.Decoder(_EchoHeaders)


def _first(value: _Value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return value[0] if value else ""
    return None


def _exact_request_id(raw: bytes, lowered: bytes, value: str) -> str | None:
    """The x-request-id as spelled in `raw`: the bytes at the offset of `value` in `lowered`
    when it occurs there once (so that offset is the header's value); None otherwise."""
    if value.upper() == value:
        return value  # no letter: the same in any case
    spelled = value.encode()
    at = lowered.find(spelled)
    if at < 0 or lowered.find(spelled, at + 1) >= 0:
        return None
    return raw[at : at + len(spelled)].decode("ascii")


def echo_context(body: bytes, tracer: TracerFamily = TracerFamily.ZIPKIN) -> EchoContext | None:
    """The context `parse_echo(json.loads(body).get("headers", {}), tracer)` reads, for the
    echoes a mesh answers; None when the body needs that general path (see above)."""
    try:
        raw = bytes(_ECHO.decode(body).headers)
    except msgspec.MsgspecError:
        return None
    if not raw:
        return _context(tracer, None, None, None, None, None, None)
    if not raw.isascii() or b"\\" in raw:
        return None
    lowered = raw.lower()
    if any(lowered.count(key) > 1 for key in _KEYS):
        # A header spelled twice (`"B3"` and `"b3"`, or a repeated key): which one the general
        # path reads depends on the order of the object's first spellings, not the last value.
        return None
    try:
        h = _ECHO_HEADERS.decode(lowered)
    except msgspec.MsgspecError:
        return None
    xrid = _first(h.x_request_id)
    if xrid:
        xrid = _exact_request_id(raw, lowered, xrid)
        if xrid is None:
            return None
    b3, trace, span, sampled, traceparent = h.b3, h.x_b3_traceid, h.x_b3_spanid, h.x_b3_sampled, h.traceparent
    return _context(
        tracer,
        xrid,
        b3 if b3.__class__ is str else _first(b3),
        trace if trace.__class__ is str else _first(trace),
        span if span.__class__ is str else _first(span),
        sampled if sampled.__class__ is str else _first(sampled),
        traceparent if traceparent.__class__ is str else _first(traceparent),
    )


def parse_echo_body(body: bytes, tracer: TracerFamily = TracerFamily.ZIPKIN) -> UpstreamView | None:
    """`parse_echo(json.loads(body).get("headers", {}), tracer)` for the echoes a mesh answers,
    several times faster; None when the body needs that general path (see above)."""
    context = echo_context(body, tracer)
    return None if context is None else UpstreamView(*context, tracer)


def same_request_id(sent: str | None, echoed: str | None) -> bool:
    """The upstream saw the id we sent: equal, ignoring char 14 (where Envoy writes its
    decision into a kept UUID) and case."""
    if not sent or not echoed or len(sent) != len(echoed):
        return False
    a, b = sent.lower(), echoed.lower()
    return a[:14] + a[15:] == b[:14] + b[15:]
