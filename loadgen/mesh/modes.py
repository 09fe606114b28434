"""The header modes (pure data): what each of the 49 modes sends (`MODE_SPECS`), the default
mix, and the `MODE=WEIGHT` mix syntax. What Envoy does with a mode's request is
`ModeSpec.expected(ctx)` (loadgen.mesh.expect)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from loadgen.mesh.expect import DEFAULT_CONTEXT, Decision, ExpectationContext, Expected, expect
from loadgen.mesh.sends import B3Form, Sends, XridKind

__all__ = [
    "DEFAULT_MIX",
    "LEGACY_MODES",
    "MODE_SPECS",
    "HeaderMode",
    "ModeSpec",
    "format_mix",
    "mode_spec",
    "parse_mix",
]


class HeaderMode(StrEnum):
    NONE = "none"
    # B3 multi (the first three are the original modes: 128-bit ids, no parent)
    B3_MULTI_SAMPLED = "b3_multi_sampled"
    B3_MULTI_NOT_SAMPLED = "b3_multi_not_sampled"
    B3_MULTI_NO_FLAG = "b3_multi_no_flag"
    B3_MULTI_SAMPLED_PARENT = "b3_multi_sampled_parent"
    B3_MULTI_NOT_SAMPLED_PARENT = "b3_multi_not_sampled_parent"
    B3_MULTI_NO_FLAG_PARENT = "b3_multi_no_flag_parent"
    B3_MULTI_SAMPLED_64 = "b3_multi_sampled_64"
    B3_MULTI_NOT_SAMPLED_64 = "b3_multi_not_sampled_64"
    B3_MULTI_NO_FLAG_64 = "b3_multi_no_flag_64"
    B3_MULTI_SAMPLED_64_PARENT = "b3_multi_sampled_64_parent"
    B3_MULTI_NOT_SAMPLED_64_PARENT = "b3_multi_not_sampled_64_parent"
    B3_MULTI_NO_FLAG_64_PARENT = "b3_multi_no_flag_64_parent"
    B3_MULTI_DEBUG = "b3_multi_debug"
    B3_MULTI_DEBUG_NOT_SAMPLED = "b3_multi_debug_not_sampled"
    B3_FLAGS_ONLY = "b3_flags_only"
    B3_SAMPLED_ONLY = "b3_sampled_only"
    B3_NOT_SAMPLED_ONLY = "b3_not_sampled_only"
    B3_MULTI_INVALID_TRACE = "b3_multi_invalid_trace"
    # B3 single
    B3_SINGLE_SAMPLED = "b3_single_sampled"
    B3_SINGLE_NOT_SAMPLED = "b3_single_not_sampled"
    B3_SINGLE_NO_FLAG = "b3_single_no_flag"
    B3_SINGLE_DEBUG = "b3_single_debug"
    B3_SINGLE_SAMPLED_PARENT = "b3_single_sampled_parent"
    B3_SINGLE_NOT_SAMPLED_PARENT = "b3_single_not_sampled_parent"
    B3_SINGLE_DEBUG_PARENT = "b3_single_debug_parent"
    B3_SINGLE_DENY = "b3_single_deny"
    B3_SINGLE_DEBUG_ONLY = "b3_single_debug_only"
    # W3C trace context, alone and with B3
    W3C_SAMPLED = "w3c_sampled"
    W3C_NOT_SAMPLED = "w3c_not_sampled"
    W3C_SAMPLED_TRACESTATE = "w3c_sampled_tracestate"
    W3C_NOT_SAMPLED_TRACESTATE = "w3c_not_sampled_tracestate"
    W3C_SAMPLED_B3_NOT_SAMPLED = "w3c_sampled_b3_not_sampled"
    W3C_NOT_SAMPLED_B3_SAMPLED = "w3c_not_sampled_b3_sampled"
    W3C_SAMPLED_B3_NO_FLAG = "w3c_sampled_b3_no_flag"
    W3C_NOT_SAMPLED_B3_NO_FLAG = "w3c_not_sampled_b3_no_flag"
    W3C_NOT_SAMPLED_B3_SINGLE_SAMPLED = "w3c_not_sampled_b3_single_sampled"
    # W3C with Envoy's forcing header, and an invalid traceparent: what the OpenTelemetry tracer
    # calls for (its traceparent 00 vetoes even x-client-trace-id; an invalid one means no span)
    W3C_SAMPLED_CLIENT_TRACE_ID = "w3c_sampled_client_trace_id"
    W3C_NOT_SAMPLED_CLIENT_TRACE_ID = "w3c_not_sampled_client_trace_id"
    W3C_INVALID_TRACE = "w3c_invalid_trace"
    # Envoy's forcing headers
    FORCE_TRACE = "force_trace"
    FORCE_TRACE_NOT_SAMPLED = "force_trace_not_sampled"
    CLIENT_TRACE_ID = "client_trace_id"
    CLIENT_TRACE_ID_NOT_SAMPLED = "client_trace_id_not_sampled"
    # client x-request-id
    XRID_RANDOM = "xrid_random"
    XRID_CRAFTED = "xrid_crafted"
    XRID_FORCED = "xrid_forced"
    XRID_NON_UUID = "xrid_non_uuid"
    XRID_NO_DASHES = "xrid_no_dashes"


#: The seven modes of the first release (their names and meaning never change).
LEGACY_MODES: tuple[HeaderMode, ...] = (
    HeaderMode.NONE,
    HeaderMode.B3_MULTI_SAMPLED,
    HeaderMode.B3_MULTI_NOT_SAMPLED,
    HeaderMode.B3_MULTI_NO_FLAG,
    HeaderMode.B3_SINGLE_SAMPLED,
    HeaderMode.B3_SINGLE_NOT_SAMPLED,
    HeaderMode.B3_SINGLE_NO_FLAG,
)


@dataclass(frozen=True)
class ModeSpec:
    """What a mode sends (data) and, through `expected(ctx)`, what Envoy does with it."""

    mode: HeaderMode
    sends: Sends
    description: str

    def expected(self, ctx: ExpectationContext = DEFAULT_CONTEXT) -> Expected:
        return expect(self.sends, ctx)

    @property
    def injects_ids(self) -> bool:
        """Whether the mode sends a trace id of its own (B3 ids or a traceparent)."""
        return self.sends.b3_ids or self.sends.w3c is not None

    @property
    def flag(self) -> str | None:
        """The sampled flag sent: the B3 one, else traceparent's (01 -> "1", 00 -> "0")."""
        if self.sends.b3_flag is not None or self.sends.b3 is not None:
            return self.sends.b3_flag
        if self.sends.w3c is not None:
            return "1" if self.sends.w3c == "01" else "0"
        return None

    @property
    def decision(self) -> Decision:
        """The decision at an Istio-default gateway, in the three kinds older callers know
        (never traced counts as not sampled). New code: `expected(ctx).decision`."""
        d = self.expected().decision
        if d is Decision.NEVER_TRACED:
            return Decision.FORCED_NOT_SAMPLED
        if d is Decision.UNPREDICTABLE:
            return Decision.PROXY
        return d


_M, _S = B3Form.MULTI, B3Form.SINGLE


def _multi(flag: str | None, bits: int = 128, parent: bool = False) -> Sends:
    return Sends(b3=_M, b3_ids=True, b3_flag=flag, trace_bits=bits, b3_parent=parent)


def _single(flag: str | None, parent: bool = False) -> Sends:
    return Sends(b3=_S, b3_ids=True, b3_flag=flag, b3_parent=parent)


_B3_MULTI_TABLE = [
    (mode, flag, bits, parent)
    for flag, name in (("1", "B3_MULTI_SAMPLED"), ("0", "B3_MULTI_NOT_SAMPLED"), (None, "B3_MULTI_NO_FLAG"))
    for bits in (128, 64)
    for parent in (False, True)
    for mode in (HeaderMode[name + ("_64" if bits == 64 else "") + ("_PARENT" if parent else "")],)
]

#: The client x-request-id modes: (mode, the id it sends, description).
_XRID_MODES = (
    (HeaderMode.XRID_RANDOM, XridKind.RANDOM,
     "a random UUIDv4 x-request-id: replaced at an Istio edge; kept (and sampled on) when the gateway preserves it"),
    (HeaderMode.XRID_CRAFTED, XridKind.CRAFTED,
     "a UUIDv4 x-request-id crafted to be sampled or not: the decision is known before sending when the gateway "
     "keeps it"),
    (HeaderMode.XRID_FORCED, XridKind.FORCED,
     "an x-request-id marked forced (char 14 'a'): traced when not an edge request; an edge resets the mark"),
    (HeaderMode.XRID_NON_UUID, XridKind.NON_UUID,
     "a non-hex x-request-id: never traced when kept, even at 100 %; replaced at an Istio edge"),
    (HeaderMode.XRID_NO_DASHES, XridKind.NO_DASHES,
     "a crafted 32-hex x-request-id without dashes: when kept, sampled by the same rule on its first 8 hex digits "
     "(char 14 is not rewritten)"),
)  # fmt: skip

MODE_SPECS: dict[HeaderMode, ModeSpec] = {
    spec.mode: spec
    for spec in (
        ModeSpec(HeaderMode.NONE, Sends(), "no trace headers: Envoy starts the trace and decides"),
        *(
            ModeSpec(
                mode, _multi(flag, bits, parent),
                f"X-B3-TraceId ({bits}-bit)/SpanId{'/ParentSpanId' if parent else ''}"
                + (f" + X-B3-Sampled: {flag}" if flag else ", no flag")
                + {"1": ": always traced", "0": ": never traced", None: ": Envoy decides"}[flag]
                + ", trace id kept" + (", parent dropped" if parent else ""),
            )
            for mode, flag, bits, parent in _B3_MULTI_TABLE
        ),
        ModeSpec(
            HeaderMode.B3_MULTI_DEBUG, Sends(b3=_M, b3_ids=True, b3_debug_header=True),
            "X-B3-TraceId/SpanId + X-B3-Flags: 1 (debug): Envoy ignores the debug flag and decides; "
            "X-B3-Flags passed through",
        ),
        ModeSpec(
            HeaderMode.B3_MULTI_DEBUG_NOT_SAMPLED,
            Sends(b3=_M, b3_ids=True, b3_flag="0", b3_debug_header=True),
            "X-B3-Flags: 1 + X-B3-Sampled: 0: the 0 wins, never traced",
        ),
        ModeSpec(
            HeaderMode.B3_FLAGS_ONLY, Sends(b3=_M, b3_debug_header=True),
            "X-B3-Flags: 1 alone: not a decision, Envoy starts a trace and decides",
        ),
        ModeSpec(
            HeaderMode.B3_SAMPLED_ONLY, Sends(b3=_M, b3_flag="1"),
            "X-B3-Sampled: 1 alone: a new trace, always traced",
        ),
        ModeSpec(
            HeaderMode.B3_NOT_SAMPLED_ONLY, Sends(b3=_M, b3_flag="0"),
            "X-B3-Sampled: 0 alone: a new trace, never traced",
        ),
        ModeSpec(
            HeaderMode.B3_MULTI_INVALID_TRACE,
            Sends(b3=_M, b3_ids=True, b3_flag="1", b3_invalid_trace=True),
            "unparsable X-B3-TraceId + SpanId + Sampled: 1: no span at all, headers forwarded untouched",
        ),
        ModeSpec(
            HeaderMode.B3_SINGLE_SAMPLED, _single("1"), "b3: {trace}-{span}-1: always traced, answered in b3 format"
        ),
        ModeSpec(HeaderMode.B3_SINGLE_NOT_SAMPLED, _single("0"), "b3: {trace}-{span}-0: never traced"),
        ModeSpec(HeaderMode.B3_SINGLE_NO_FLAG, _single(None), "b3: {trace}-{span}: Envoy decides, trace id kept"),
        ModeSpec(
            HeaderMode.B3_SINGLE_DEBUG, _single("d"),
            "b3: {trace}-{span}-d (debug): always traced; the upstream sees flag 1",
        ),
        ModeSpec(
            HeaderMode.B3_SINGLE_SAMPLED_PARENT, _single("1", True),
            "b3: {trace}-{span}-1-{parent}: always traced, parent dropped",
        ),
        ModeSpec(
            HeaderMode.B3_SINGLE_NOT_SAMPLED_PARENT, _single("0", True),
            "b3: {trace}-{span}-0-{parent}: never traced",
        ),
        ModeSpec(
            HeaderMode.B3_SINGLE_DEBUG_PARENT, _single("d", True),
            "b3: {trace}-{span}-d-{parent}: always traced, parent dropped",
        ),
        ModeSpec(HeaderMode.B3_SINGLE_DENY, Sends(b3=_S, b3_flag="0"), "b3: 0: a new trace, never traced"),
        ModeSpec(HeaderMode.B3_SINGLE_DEBUG_ONLY, Sends(b3=_S, b3_flag="d"), "b3: d: a new trace, always traced"),
        ModeSpec(
            HeaderMode.W3C_SAMPLED, Sends(w3c="01"),
            "traceparent ...-01: honoured under USE_B3_WITH_W3C_PROPAGATION (traced, id kept); "
            "ignored under USE_B3 (Envoy decides, new trace id, traceparent forwarded stale)",
        ),
        ModeSpec(
            HeaderMode.W3C_NOT_SAMPLED, Sends(w3c="00"),
            "traceparent ...-00: never traced under W3C propagation; ignored under USE_B3",
        ),
        ModeSpec(
            HeaderMode.W3C_SAMPLED_TRACESTATE, Sends(w3c="01", tracestate=True),
            "traceparent ...-01 + tracestate: as w3c_sampled; tracestate forwarded",
        ),
        ModeSpec(
            HeaderMode.W3C_NOT_SAMPLED_TRACESTATE, Sends(w3c="00", tracestate=True),
            "traceparent ...-00 + tracestate: as w3c_not_sampled; tracestate forwarded",
        ),
        ModeSpec(
            HeaderMode.W3C_SAMPLED_B3_NOT_SAMPLED, Sends(b3=_M, b3_ids=True, b3_flag="0", w3c="01"),
            "traceparent ...-01 + X-B3-* with Sampled: 0 (other ids): B3 wins, never traced",
        ),
        ModeSpec(
            HeaderMode.W3C_NOT_SAMPLED_B3_SAMPLED, Sends(b3=_M, b3_ids=True, b3_flag="1", w3c="00"),
            "traceparent ...-00 + X-B3-* with Sampled: 1: B3 wins, always traced, B3 trace id kept",
        ),
        ModeSpec(
            HeaderMode.W3C_SAMPLED_B3_NO_FLAG, Sends(b3=_M, b3_ids=True, w3c="01"),
            "traceparent ...-01 + X-B3 ids without a flag: the B3 trace id is kept; under W3C "
            "propagation traceparent's flag decides (traced), under USE_B3 Envoy decides",
        ),
        ModeSpec(
            HeaderMode.W3C_NOT_SAMPLED_B3_NO_FLAG, Sends(b3=_M, b3_ids=True, w3c="00"),
            "traceparent ...-00 + X-B3 ids without a flag: B3 trace id kept; never traced under W3C "
            "propagation, Envoy decides under USE_B3",
        ),
        ModeSpec(
            HeaderMode.W3C_NOT_SAMPLED_B3_SINGLE_SAMPLED, Sends(b3=_S, b3_ids=True, b3_flag="1", w3c="00"),
            "traceparent ...-00 + b3: {trace}-{span}-1: b3 wins, always traced",
        ),
        ModeSpec(
            HeaderMode.W3C_SAMPLED_CLIENT_TRACE_ID, Sends(w3c="01", client_trace_id=True),
            "traceparent ...-01 + x-client-trace-id: always traced; the OpenTelemetry tracer (and W3C "
            "propagation) keeps the trace id, USE_B3 starts a new one",
        ),
        ModeSpec(
            HeaderMode.W3C_NOT_SAMPLED_CLIENT_TRACE_ID, Sends(w3c="00", client_trace_id=True),
            "traceparent ...-00 + x-client-trace-id: the 00 vetoes the force under the OpenTelemetry "
            "tracer and W3C propagation (x-request-id char 14 still reads 'b'); forced under USE_B3",
        ),
        ModeSpec(
            HeaderMode.W3C_INVALID_TRACE, Sends(w3c="01", w3c_invalid=True),
            "traceparent with an all-zero (invalid) trace id, flag 01: the OpenTelemetry tracer makes no "
            "span and forwards it untouched; Zipkin ignores it (new trace, Envoy decides)",
        ),
        ModeSpec(
            HeaderMode.FORCE_TRACE, Sends(force_trace=True),
            "x-envoy-force-trace: traced for internal clients; stripped for external ones (Envoy decides)",
        ),
        ModeSpec(
            HeaderMode.FORCE_TRACE_NOT_SAMPLED, Sends(b3=_M, b3_ids=True, b3_flag="0", force_trace=True),
            "x-envoy-force-trace + X-B3-Sampled: 0: the 0 wins, never traced",
        ),
        ModeSpec(
            HeaderMode.CLIENT_TRACE_ID, Sends(client_trace_id=True),
            "x-client-trace-id: traced while client_sampling is 100, even for external clients",
        ),
        ModeSpec(
            HeaderMode.CLIENT_TRACE_ID_NOT_SAMPLED,
            Sends(b3=_M, b3_ids=True, b3_flag="0", client_trace_id=True),
            "x-client-trace-id + X-B3-Sampled: 0: the 0 wins, never traced",
        ),
        *(ModeSpec(mode, Sends(xrid=kind), description) for mode, kind, description in _XRID_MODES),
    )
}  # fmt: skip
MODE_SPECS = {mode: MODE_SPECS[mode] for mode in HeaderMode}  # in declaration order

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
    """`none=4,b3_multi_sampled=1` -> weights. Unknown or repeated modes and weights that are
    negative, not finite (`inf` makes Python's weighted choice raise on every draw, so no request
    is ever sent) or all zero are errors."""
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
        if math.isinf(value):
            raise ValueError(f"weight for {mode.value} must be a finite number, got {weight!r}")
        if mode in mix:
            raise ValueError(f"mode {mode.value} is given twice in the mix; give each mode once")
        mix[mode] = value
    if not mix or sum(mix.values()) <= 0:
        raise ValueError("the mix needs at least one mode with a positive weight")
    if math.isinf(sum(mix.values())):
        raise ValueError("the mix's weights add up to more than a float can hold; use smaller weights")
    return mix


def format_mix(mix: dict[HeaderMode, float]) -> str:
    return ",".join(f"{mode.value}={int(w) if float(w).is_integer() else w!r}" for mode, w in mix.items())


def mode_spec(name: object) -> ModeSpec | None:
    """The spec of a mode name read from a ledger (None for a mode this version does not know)."""
    try:
        return MODE_SPECS[HeaderMode(str(name))]
    except ValueError:
        return None
