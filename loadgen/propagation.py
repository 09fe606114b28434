"""Trace-context identifiers and header encoders (pure: no I/O).

References: B3 propagation (https://github.com/openzipkin/b3-propagation) and the Envoy
behaviour measured in shared/ENVOY-NOTES.md.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

_HEX = frozenset("0123456789abcdef")


def normalize_trace_id(trace_id: str) -> str:
    """Canonical form used for every lookup: lowercase hex, a 128-bit id whose high half is
    zero collapses to its 16-character low half (what Zipkin does with `strictTraceId=false`
    padding), anything else unchanged."""
    tid = trace_id.strip().lower()
    if len(tid) == 32 and tid[:16] == "0" * 16:
        return tid[16:]
    return tid


def is_hex_id(value: str, lengths: tuple[int, ...] = (16, 32)) -> bool:
    return len(value) in lengths and all(c in _HEX for c in value)


# --- identifiers -----------------------------------------------------------------------------


def new_trace_id(rng: random.Random, bits: int = 128) -> str:
    """Random lowercase-hex trace id; never all zeros (invalid in B3)."""
    while True:
        value = rng.getrandbits(bits)
        if value:
            return format(value, f"0{bits // 4}x")


def new_span_id(rng: random.Random) -> str:
    return new_trace_id(rng, 64)


# --- header modes ----------------------------------------------------------------------------


class Decision(StrEnum):
    """Who decides whether a request is traced, as Envoy behaves (shared/ENVOY-NOTES.md)."""

    FORCED_SAMPLED = "forced_sampled"  # the client's sampled flag 1/d wins
    FORCED_NOT_SAMPLED = "forced_not_sampled"  # the client's sampled flag 0 wins
    PROXY = "proxy"  # no flag: Envoy's random sampling from the x-request-id


class HeaderMode(StrEnum):
    NONE = "none"
    B3_MULTI_SAMPLED = "b3_multi_sampled"
    B3_MULTI_NOT_SAMPLED = "b3_multi_not_sampled"
    B3_MULTI_NO_FLAG = "b3_multi_no_flag"
    B3_SINGLE_SAMPLED = "b3_single_sampled"
    B3_SINGLE_NOT_SAMPLED = "b3_single_not_sampled"
    B3_SINGLE_NO_FLAG = "b3_single_no_flag"


@dataclass(frozen=True)
class ModeSpec:
    """What a mode sends and what Envoy is expected to do with it (data, checked per run)."""

    mode: HeaderMode
    injects_ids: bool
    flag: str | None  # the sampled flag sent: "1", "0" or None
    decision: Decision
    description: str


MODE_SPECS: dict[HeaderMode, ModeSpec] = {
    spec.mode: spec
    for spec in (
        ModeSpec(HeaderMode.NONE, False, None, Decision.PROXY, "no trace headers: Envoy starts the trace and decides"),
        ModeSpec(
            HeaderMode.B3_MULTI_SAMPLED, True, "1", Decision.FORCED_SAMPLED,
            "X-B3-TraceId/SpanId + X-B3-Sampled: 1: always traced, trace id kept",
        ),
        ModeSpec(
            HeaderMode.B3_MULTI_NOT_SAMPLED, True, "0", Decision.FORCED_NOT_SAMPLED,
            "X-B3-TraceId/SpanId + X-B3-Sampled: 0: never traced, trace id kept",
        ),
        ModeSpec(
            HeaderMode.B3_MULTI_NO_FLAG, True, None, Decision.PROXY,
            "X-B3-TraceId/SpanId, no flag: Envoy decides, trace id kept",
        ),
        ModeSpec(
            HeaderMode.B3_SINGLE_SAMPLED, True, "1", Decision.FORCED_SAMPLED,
            "b3: {trace}-{span}-1: always traced, answered in b3 format",
        ),
        ModeSpec(
            HeaderMode.B3_SINGLE_NOT_SAMPLED, True, "0", Decision.FORCED_NOT_SAMPLED,
            "b3: {trace}-{span}-0: never traced",
        ),
        ModeSpec(
            HeaderMode.B3_SINGLE_NO_FLAG, True, None, Decision.PROXY,
            "b3: {trace}-{span}: Envoy decides, trace id kept",
        ),
    )
}  # fmt: skip

DEFAULT_MIX: dict[HeaderMode, float] = {
    HeaderMode.NONE: 4,
    HeaderMode.B3_MULTI_SAMPLED: 1,
    HeaderMode.B3_MULTI_NOT_SAMPLED: 1,
    HeaderMode.B3_MULTI_NO_FLAG: 2,
    HeaderMode.B3_SINGLE_SAMPLED: 1,
    HeaderMode.B3_SINGLE_NOT_SAMPLED: 0,
    HeaderMode.B3_SINGLE_NO_FLAG: 1,
}


def parse_mix(text: str) -> dict[HeaderMode, float]:
    """`none=4,b3_multi_sampled=1` -> weights. Unknown modes and negative weights are errors."""
    mix: dict[HeaderMode, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        if not sep:
            raise ValueError(f"mix entry {part!r} must look like MODE=WEIGHT")
        try:
            mode = HeaderMode(name.strip())
        except ValueError:
            known = ", ".join(m.value for m in HeaderMode)
            raise ValueError(f"unknown header mode {name.strip()!r}; known modes: {known}") from None
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"weight for {mode.value} must be a number, got {weight!r}") from None
        if value < 0 or math.isnan(value):
            raise ValueError(f"weight for {mode.value} must be >= 0, got {weight!r}")
        mix[mode] = value
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("the mix needs at least one mode with a positive weight")
    return mix


def format_mix(mix: dict[HeaderMode, float]) -> str:
    return ",".join(f"{mode.value}={int(w) if float(w).is_integer() else w!r}" for mode, w in mix.items())


@dataclass(frozen=True)
class Injection:
    """The trace context one request carries out of the generator."""

    headers: dict[str, str]
    trace_id: str | None = None
    span_id: str | None = None
    flag: str | None = None


def encode(mode: HeaderMode, rng: random.Random) -> Injection:
    """Headers for one request of the given mode, with fresh random ids."""
    spec = MODE_SPECS[mode]
    if not spec.injects_ids:
        return Injection(headers={})
    trace_id, span_id = new_trace_id(rng), new_span_id(rng)
    if mode in (HeaderMode.B3_MULTI_SAMPLED, HeaderMode.B3_MULTI_NOT_SAMPLED, HeaderMode.B3_MULTI_NO_FLAG):
        headers = {"X-B3-TraceId": trace_id, "X-B3-SpanId": span_id}
        if spec.flag is not None:
            headers["X-B3-Sampled"] = spec.flag
    else:
        headers = {"b3": f"{trace_id}-{span_id}" + (f"-{spec.flag}" if spec.flag is not None else "")}
    return Injection(headers=headers, trace_id=trace_id, span_id=span_id, flag=spec.flag)


# --- what the upstream saw -------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamView:
    """Trace context as received by the upstream (parsed from an httpbin-like header echo)."""

    trace_id: str | None
    span_id: str | None
    flag: str | None  # "1", "0", "d" or None
    request_id: str | None

    @property
    def sampled(self) -> bool | None:
        """The decision propagated upstream: the B3 flag, else Envoy's mark in x-request-id."""
        if self.flag is not None:
            return self.flag in ("1", "d")
        return xrid_decision(self.request_id)


def parse_b3_single(value: str) -> tuple[str | None, str | None, str | None]:
    """`{trace}-{span}[-{flag}[-{parent}]]` or a bare flag -> (trace, span, flag)."""
    parts = value.strip().lower().split("-")
    if len(parts) == 1:
        return None, None, parts[0] or None
    flag = parts[2] if len(parts) >= 3 else None
    return parts[0], parts[1], flag


def parse_echo(headers: Mapping[str, object]) -> UpstreamView:
    """Read an echo of request headers (any case). `b3` wins over `X-B3-*` as it does in Envoy.

    Values may be strings (httpbin) or lists of strings (go-httpbin); the first value counts."""
    lower: dict[str, str] = {}
    for key, value in headers.items():
        if isinstance(value, list):
            value = value[0] if value else ""
        lower[str(key).lower()] = str(value)
    xrid = lower.get("x-request-id")
    if "b3" in lower:
        trace, span, flag = parse_b3_single(lower["b3"])
        return UpstreamView(trace, span, flag, xrid)
    flag = lower.get("x-b3-sampled")
    if flag is not None:
        flag = {"true": "1", "false": "0"}.get(flag.lower(), flag.lower())
    trace = lower.get("x-b3-traceid")
    span = lower.get("x-b3-spanid")
    return UpstreamView(trace.lower() if trace else None, span.lower() if span else None, flag, xrid)


# Character 14 of an Envoy-generated x-request-id carries the trace decision (pack_trace_reason).
XRID_TRACE_REASON = {"9": "sampled", "4": "not_sampled", "a": "forced", "b": "client_forced"}


def xrid_decision(request_id: str | None) -> bool | None:
    if not request_id or len(request_id) < 15:
        return None
    reason = XRID_TRACE_REASON.get(request_id[14].lower())
    if reason is None:
        return None
    return reason != "not_sampled"


def envoy_random_sampled(request_id: str, percent: float) -> bool | None:
    """Envoy's random-sampling rule on an x-request-id UUID (measured, shared/ENVOY-NOTES.md):
    sampled <=> int(xrid[0:8], 16) % 10000 < int(10000 * (percent / 100.0)). None if unparsable."""
    head = request_id[:8]
    if len(head) < 8 or any(c not in _HEX for c in head.lower()):
        return None
    # Envoy's ProtobufPercentHelper::convertPercent: uint64_t(10000 * (percent / 100.0)); the
    # float rounding of that exact expression decides the boundary (0.29 % -> 28, not 29).
    return int(head, 16) % 10000 < int(10000 * (percent / 100.0))


def mode_spec(name: object) -> ModeSpec | None:
    """The spec of a mode name read from a ledger (None for a mode this version does not know)."""
    try:
        return MODE_SPECS[HeaderMode(str(name))]
    except ValueError:
        return None
