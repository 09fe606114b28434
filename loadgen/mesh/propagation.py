"""Trace-context identifiers and header encoders (pure: no I/O).

References: B3 propagation (https://github.com/openzipkin/b3-propagation), W3C Trace Context
(https://www.w3.org/TR/trace-context/) and the Envoy behaviour measured in shared/ENVOY-NOTES.md.

Every header mode is data (`MODE_SPECS`: what a request carries, `Sends`); what Envoy does with
it depends on the mesh (`ExpectationContext`: W3C propagation on or off, whether the gateway keeps
a client x-request-id, client_sampling, ...) and is computed by the pure `expect()`, whose rules
tests/integration/test_header_matrix.py checks against the real Envoy 1.40 binary.
"""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

_HEX = frozenset("0123456789abcdef")


def normalize_trace_id(trace_id: str) -> str:
    """Canonical form used for every lookup: lowercase hex, a 128-bit id whose high half is
    zero collapses to its 16-character low half (what Zipkin does with `strictTraceId=false`
    padding), anything else unchanged. An id already in that form is returned as is (the same
    object: a read-back keyed by 100k ids then holds each id once)."""
    tid = trace_id.strip().lower()
    if len(tid) == 32 and tid[:16] == "0" * 16:
        return tid[16:]
    return trace_id if tid == trace_id else tid


_HEX_RUN = re.compile(r"[0-9a-f]+")


def is_hex_id(value: str, lengths: tuple[int, ...] = (16, 32)) -> bool:
    # A regex match instead of a per-character loop: this runs for every id of every span the
    # collector accepts (it was 30 % of the collector's CPU in bench/collector_ingest.py).
    return len(value) in lengths and _HEX_RUN.fullmatch(value) is not None


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
    """Who decides whether a request is traced, as Envoy 1.40 behaves (shared/ENVOY-NOTES.md,
    re-measured by tests/integration/test_header_matrix.py)."""

    FORCED_SAMPLED = "forced_sampled"  # the client's headers force tracing (flag 1/d, force, ...)
    FORCED_NOT_SAMPLED = "forced_not_sampled"  # the client's sampled flag 0 wins
    PROXY = "proxy"  # no flag: Envoy's random sampling from the x-request-id
    NEVER_TRACED = "never_traced"  # Envoy cannot trace it at all (unparsable ids): no span
    UNPREDICTABLE = "unpredictable"  # a runtime coin the client cannot see (client_sampling 0<p<100)


@dataclass(frozen=True)
class ExpectationContext:
    """The mesh configuration a mode's expected behaviour depends on. Defaults are Istio's
    ingress gateway: an edge (`use_remote_address: true`) that replaces the client's
    x-request-id (`preserve_external_request_id: false`), B3 only, no internal addresses,
    client_sampling and overall_sampling 100."""

    sampling_percent: float | None = None  # the gateway's random_sampling (None: unknown)
    w3c: bool = False  # ZipkinConfig.trace_context_option USE_B3_WITH_W3C_PROPAGATION
    use_remote_address: bool = True
    preserve_external_request_id: bool = False
    client_internal: bool = False  # the client is inside the gateway's internal_address_config
    client_sampling_percent: float = 100.0  # tracing.client_sampling (x-client-trace-id)
    overall_sampling_percent: float = 100.0  # the gateway's tracing.overall_sampling (Istio: 100)

    @property
    def edge_request(self) -> bool:
        """Envoy's `edge_request`: an external client of a gateway using the remote address."""
        return self.use_remote_address and not self.client_internal

    @property
    def keeps_client_request_id(self) -> bool:
        """The client's x-request-id reaches the upstream (Envoy regenerates it only for edge
        requests without preserve_external_request_id)."""
        return self.preserve_external_request_id or not self.edge_request

    @property
    def honours_client_trace_reason(self) -> bool:
        """Char 14 of a kept client x-request-id is honoured (an edge request has it reset)."""
        return not self.edge_request


DEFAULT_CONTEXT = ExpectationContext()


@dataclass(frozen=True)
class Expected:
    """What Envoy 1.40 does with one mode's request in one mesh configuration."""

    decision: Decision
    keeps_trace_id: bool | None  # the upstream continues the trace id we sent (None: none sent)
    upstream_sampled: bool | None  # the decision the upstream sees (None: Envoy's random draw)
    predictable_before_send: bool  # the decision follows from the x-request-id we sent
    request_id_kept: bool | None  # the upstream sees our x-request-id (char 14 aside)
    upstream_b3: str  # "multi" (X-B3-*) or "single" (b3) — Envoy answers in the format it got
    traceparent: str  # upstream traceparent: "rewritten" by Envoy, "stale" (ours) or "absent"
    client_span_is_parent: bool  # our span id becomes the gateway SERVER span's parent
    reason: str
    #: PROXY decisions: the percent Envoy's x-request-id rule (`envoy_random_sampled`) decides at:
    #: min(random_sampling, overall_sampling), or overall_sampling alone for a forced request on a
    #: kept client id. None when unknown or not a PROXY decision.
    proxy_percent: float | None = None

    @property
    def spans(self) -> bool | None:
        """Spans in the collector: always, never, or None (decided by the id/a runtime coin)."""
        if self.decision is Decision.FORCED_SAMPLED:
            return True
        if self.decision in (Decision.FORCED_NOT_SAMPLED, Decision.NEVER_TRACED):
            return False
        return None


class B3Form(StrEnum):
    MULTI = "multi"  # X-B3-TraceId / X-B3-SpanId / X-B3-ParentSpanId / X-B3-Sampled / X-B3-Flags
    SINGLE = "single"  # b3: {trace}-{span}[-{flag}[-{parent}]] or b3: {flag}


class XridKind(StrEnum):
    RANDOM = "random"  # a random UUIDv4
    CRAFTED = "crafted"  # a UUIDv4 whose first 8 hex digits decide Envoy's random sampling
    FORCED = "forced"  # a UUIDv4 with char 14 `a` (Envoy's "forced" trace reason)
    NON_UUID = "non_uuid"  # not a UUID, not hex: Envoy cannot sample on it
    NO_DASHES = "no_dashes"  # 32 hex digits (a UUID without dashes), crafted like CRAFTED


@dataclass(frozen=True)
class Sends:
    """What one request of a mode carries (the data the expectations are derived from)."""

    b3: B3Form | None = None
    b3_ids: bool = False  # trace id + span id
    b3_flag: str | None = None  # X-B3-Sampled / b3 flag sent: "1", "0", "d" or None
    trace_bits: int = 128
    b3_parent: bool = False  # X-B3-ParentSpanId / the b3 `-{parent}` suffix
    b3_debug_header: bool = False  # X-B3-Flags: 1
    b3_invalid_trace: bool = False  # an X-B3-TraceId Envoy cannot parse
    w3c: str | None = None  # traceparent flags "01" / "00"
    tracestate: bool = False
    force_trace: bool = False  # x-envoy-force-trace: true
    client_trace_id: bool = False  # x-client-trace-id: <uuid>
    xrid: XridKind | None = None  # a client x-request-id


def expect(sends: Sends, ctx: ExpectationContext = DEFAULT_CONTEXT) -> Expected:
    """Pure: Envoy 1.40's behaviour for a request carrying `sends` at a gateway configured as
    `ctx` (then through a sidecar). Every rule below was measured on the real binary
    (tests/integration/test_header_matrix.py, test_mesh_knobs.py); the order is Envoy's order.

    overall_sampling below 100 (measured, README "overall_sampling"): a client's sampled flag is
    untouched; every decision Envoy makes itself is vetoed unless
    `int(xrid[0:8], 16) % 10000 < int(10000 * overall / 100)` on the x-request-id the gateway
    ends up with. Random sampling thus decides at min(random, overall) (PROXY); a forced
    decision (x-client-trace-id, x-envoy-force-trace, a kept forced id) is PROXY at `overall`
    when the id is the client's own (known before sending), UNPREDICTABLE when Envoy made the id,
    and never traced at overall 0."""
    xrid_kept = None if sends.xrid is None else ctx.keeps_client_request_id
    upstream_b3 = (sends.b3 or B3Form.MULTI).value
    stale_or_absent = "stale" if sends.w3c else "absent"

    def out(
        decision: Decision,
        keeps: bool | None,
        upstream: bool | None,
        why: str,
        *,
        predictable: bool = False,
        traceparent: str | None = None,
        proxy_percent: float | None = None,
    ) -> Expected:
        return Expected(
            decision=decision,
            keeps_trace_id=keeps,
            upstream_sampled=upstream,
            predictable_before_send=predictable,
            request_id_kept=xrid_kept,
            upstream_b3=upstream_b3,
            traceparent=traceparent or ("rewritten" if ctx.w3c else stale_or_absent),
            client_span_is_parent=bool(keeps),
            reason=why,
            proxy_percent=proxy_percent,
        )

    # 1. An unparsable B3 trace id: the Zipkin tracer gives up (a null span); the client's headers
    #    go upstream untouched, so the upstream sees the client's own flag.
    if sends.b3_invalid_trace:
        sent = sends.b3_flag
        return out(
            Decision.NEVER_TRACED, None, None if sent is None else sent in ("1", "d"),
            "unparsable X-B3-TraceId: no span at all, client headers forwarded untouched",
            traceparent=stale_or_absent,
        )  # fmt: skip

    # 2. The incoming context. B3 ids beat W3C; W3C counts only under
    #    USE_B3_WITH_W3C_PROPAGATION. X-B3-Flags: 1 is not a sampling decision in Envoy.
    #    Measured under W3C propagation: X-B3 ids *without* a sampled flag keep the B3 trace id
    #    but take traceparent's flag (a `b3` single header without flag does not); B3 without
    #    ids yields to traceparent's ids, and either sampled flag then samples.
    w3c_flag = None if sends.w3c is None else ("1" if sends.w3c == "01" else "0")
    flag: str | None = None
    keeps: bool | None = None
    source = ""
    if sends.b3 is not None and sends.b3_ids:
        flag, source, keeps = sends.b3_flag, "B3", True
        if flag is None and ctx.w3c and w3c_flag is not None and sends.b3 is B3Form.MULTI:
            flag, source = w3c_flag, "B3 ids with traceparent's flag"
    elif sends.w3c is not None and ctx.w3c:
        flag, source, keeps = w3c_flag, "traceparent", True
        if sends.b3 is B3Form.MULTI and sends.b3_flag in ("1", "d"):
            flag = "1"
    elif sends.b3 is not None and sends.b3_flag is not None:
        flag, source = sends.b3_flag, "B3 flag without ids"
    elif sends.b3 is not None:
        source = "B3 without ids or flag"
    elif sends.w3c is not None:
        keeps, source = False, "traceparent ignored under USE_B3"

    if flag in ("1", "d"):
        return out(Decision.FORCED_SAMPLED, keeps, True, f"{source} sampled flag {flag!r} wins")
    if flag == "0":
        return out(Decision.FORCED_NOT_SAMPLED, keeps, False, f"{source} sampled flag '0' wins")

    # 3. No flag: Envoy's own decision, x-request-id first (a kept id's trace reason stands).
    #    4. overall_sampling then vetoes it by the same x-request-id rule (`forced` and below).
    why = source + "; " if source else ""
    kept_id = sends.xrid is not None and ctx.keeps_client_request_id
    overall = ctx.overall_sampling_percent
    overall_threshold = sampling_threshold(overall)

    def forced(what: str) -> Expected:
        if overall_threshold >= 10000:
            return out(Decision.FORCED_SAMPLED, keeps, True, why + what)
        if overall_threshold <= 0:
            return out(
                Decision.NEVER_TRACED, keeps, False, why + what + f", vetoed by overall_sampling {overall:g}"
            )
        if kept_id:
            return out(
                Decision.PROXY, keeps, None,
                why + what + f", kept iff our x-request-id passes overall_sampling {overall:g} %",
                predictable=True, proxy_percent=overall,
            )  # fmt: skip
        return out(
            Decision.UNPREDICTABLE, keeps, None,
            why + what + f", vetoed by overall_sampling {overall:g} % on Envoy's own x-request-id",
        )  # fmt: skip

    if kept_id:
        if sends.xrid is XridKind.NON_UUID:
            return out(Decision.NEVER_TRACED, keeps, False, why + "kept non-hex x-request-id: never traced")
        if sends.xrid is XridKind.FORCED and ctx.honours_client_trace_reason:
            return forced("kept x-request-id marked forced (char 14 'a')")
    if sends.client_trace_id:
        if ctx.client_sampling_percent >= 100.0:
            return forced("x-client-trace-id at client_sampling 100")
        if ctx.client_sampling_percent > 0.0:
            return out(
                Decision.UNPREDICTABLE, keeps, None, why + "x-client-trace-id at 0 < client_sampling < 100"
            )
    if sends.force_trace and ctx.client_internal:
        return forced("x-envoy-force-trace from an internal client")
    detail = (
        "random sampling on our kept x-request-id" if kept_id else "random sampling on Envoy's x-request-id"
    )
    if sends.force_trace:
        detail += " (x-envoy-force-trace stripped: external client)"
    percent = ctx.sampling_percent
    if overall_threshold < 10000:
        detail += f", capped by overall_sampling {overall:g} %"
        percent = None if percent is None else min(percent, overall)
    return out(Decision.PROXY, keeps, None, why + detail, predictable=kept_id, proxy_percent=percent)  # fmt: skip


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
        ModeSpec(
            HeaderMode.XRID_RANDOM, Sends(xrid=XridKind.RANDOM),
            "a random UUIDv4 x-request-id: replaced at an Istio edge; kept (and sampled on) when "
            "the gateway preserves it",
        ),
        ModeSpec(
            HeaderMode.XRID_CRAFTED, Sends(xrid=XridKind.CRAFTED),
            "a UUIDv4 x-request-id crafted to be sampled or not: the decision is known before "
            "sending when the gateway keeps it",
        ),
        ModeSpec(
            HeaderMode.XRID_FORCED, Sends(xrid=XridKind.FORCED),
            "an x-request-id marked forced (char 14 'a'): traced when not an edge request; an edge "
            "resets the mark",
        ),
        ModeSpec(
            HeaderMode.XRID_NON_UUID, Sends(xrid=XridKind.NON_UUID),
            "a non-hex x-request-id: never traced when kept, even at 100 %; replaced at an Istio edge",
        ),
        ModeSpec(
            HeaderMode.XRID_NO_DASHES, Sends(xrid=XridKind.NO_DASHES),
            "a crafted 32-hex x-request-id without dashes: when kept, sampled by the same rule on its "
            "first 8 hex digits (char 14 is not rewritten)",
        ),
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


# --- crafted x-request-ids -------------------------------------------------------------------

_UINT32_MAX = 0xFFFFFFFF


def sampling_threshold(percent: float) -> int:
    """Envoy's numerator over 10000 for a `random_sampling` percent (ProtobufPercentHelper::
    convertPercent: `uint64_t(10000 * (percent / 100.0))`, truncated: 33.33 % -> 3332)."""
    return int(10000 * (percent / 100.0))


def craft_head(rng: random.Random, percent: float, sampled: bool) -> int:
    """A random 32-bit value v with `(v % 10000 < threshold) == sampled`, uniform over the
    residues that give the wanted answer. ValueError when the percentage makes it impossible
    (sampled at 0 %, not sampled at 100 %)."""
    threshold = min(10000, max(0, sampling_threshold(percent)))
    low, high = (0, threshold) if sampled else (threshold, 10000)
    if low >= high:
        raise ValueError(f"no x-request-id is {'sampled' if sampled else 'not sampled'} at {percent} %")
    residue = rng.randrange(low, high)
    quotient = rng.randrange(0, (_UINT32_MAX - residue) // 10000 + 1)
    return quotient * 10000 + residue


def random_request_id(rng: random.Random) -> str:
    """A random UUIDv4 string (version nibble at char 14 is `4`, Envoy's "not traced" mark)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def craft_request_id(rng: random.Random, percent: float, sampled: bool, *, dashes: bool = True) -> str:
    """A UUIDv4-shaped x-request-id that Envoy samples (or not) at `percent`: its first 8 hex
    digits are `craft_head`, the rest random. `dashes=False` gives the 32-hex form."""
    rid = f"{craft_head(rng, percent, sampled):08x}" + random_request_id(rng)[8:]
    return rid if dashes else rid.replace("-", "")


def non_uuid_request_id(rng: random.Random) -> str:
    """An x-request-id Envoy cannot sample on (not hex in its first 8 characters)."""
    return "loadgen-" + "".join(rng.choice("ghijklmnopqrstuvwxyz") for _ in range(16))


def forced_request_id(rng: random.Random) -> str:
    """A UUID with char 14 set to `a`: Envoy's "forced" trace reason (pack_trace_reason)."""
    rid = random_request_id(rng)
    return rid[:14] + "a" + rid[15:]


def same_request_id(sent: str | None, echoed: str | None) -> bool:
    """The upstream saw the id we sent: equal, ignoring char 14 (where Envoy writes its
    decision into a kept UUID) and case."""
    if not sent or not echoed or len(sent) != len(echoed):
        return False
    a, b = sent.lower(), echoed.lower()
    return a[:14] + a[15:] == b[:14] + b[15:]


# --- trace ids: random or k6-style -----------------------------------------------------------


class IdStyle(StrEnum):
    RANDOM = "random"  # every bit random (the default)
    K6 = "k6"  # grafana/k6's structured trace ids (see k6_trace_id)


K6_PREFIX = 0o756  # "Being 075 the ASCII code for 'K'" (k6 source)
K6_LOCAL_CODE = 33  # k6's code for a local (non-cloud) run; 12 is k6 Cloud


def _zigzag_varint(value: int) -> bytes:
    """Go's binary.PutVarint: zig-zag then unsigned LEB128 (7 bits per byte, low bits first)."""
    ux = (value << 1) ^ (value >> 63) if value < 0 else value << 1
    ux &= (1 << 64) - 1
    out = bytearray()
    while ux >= 0x80:
        out.append((ux & 0x7F) | 0x80)
        ux >>= 7
    out.append(ux)
    return bytes(out)


def k6_trace_id(rng: random.Random, unix_nanos: int, code: int = K6_LOCAL_CODE) -> str:
    """A 128-bit trace id laid out like k6's `http` tracing instrumentation
    (k6/experimental/tracing `newTraceID`): varint(0o756) ‖ varint(code) ‖ varint(unix time in
    ns) ‖ random bytes up to 16, each varint Go's zig-zag `PutVarint`. For a local run at a
    present-day time this is `dc0742` + 9 bytes of time + 4 random bytes; the time is readable
    back with `k6_trace_time_ns`, so the id tells when the request was generated."""
    head = _zigzag_varint(K6_PREFIX) + _zigzag_varint(code) + _zigzag_varint(unix_nanos)
    if len(head) >= 16:
        raise ValueError("time does not fit a k6 trace id")
    fill = 16 - len(head)
    return (head + rng.getrandbits(8 * fill).to_bytes(fill, "big")).hex()


def k6_trace_time_ns(trace_id: str) -> int | None:
    """The generation time (unix ns) of a k6-style trace id, None if it is not one."""
    try:
        data = bytes.fromhex(trace_id)
    except ValueError:
        return None
    values: list[int] = []
    pos = 0
    for _ in range(3):
        shift, ux = 0, 0
        while True:
            if pos >= len(data) or shift > 63:
                return None
            byte = data[pos]
            pos += 1
            ux |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        values.append((ux >> 1) ^ -(ux & 1))
    if values[0] != K6_PREFIX or values[1] not in (K6_LOCAL_CODE, 12):
        return None
    return values[2]


# --- encoding --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodeOptions:
    """How ids are generated (the mode decides which headers carry them)."""

    id_style: IdStyle = IdStyle.RANDOM  # applies to 128-bit trace ids (k6 has no 64-bit form)
    #: The gateway's sampling percent that crafted x-request-ids target (None: ids are random
    #: and no prediction is recorded).
    crafted_percent: float | None = None
    crafted_sampled_fraction: float = 0.5  # share of crafted ids meant to be sampled
    clock_ns: Callable[[], int] = time.time_ns


DEFAULT_ENCODE_OPTIONS = EncodeOptions()


@dataclass(frozen=True)
class Injection:
    """The trace context one request carries out of the generator."""

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


def encode(
    mode: HeaderMode, rng: random.Random, options: EncodeOptions = DEFAULT_ENCODE_OPTIONS
) -> Injection:
    """Headers for one request of the given mode, with fresh ids."""
    spec = MODE_SPECS[mode]
    sends = spec.sends
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
        w3c_trace, w3c_span = _trace_id(rng, 128, options), new_span_id(rng)
        headers["traceparent"] = f"00-{w3c_trace}-{w3c_span}-{sends.w3c}"
        if sends.tracestate:
            headers["tracestate"] = f"loadgen={w3c_span},congo=t61rcWkgMzE"
        if not sends.b3_ids:  # B3 wins when both are sent: its ids are the ones to follow
            trace_id, span_id = w3c_trace, w3c_span
    if sends.force_trace:
        headers["x-envoy-force-trace"] = "true"
    if sends.client_trace_id:
        headers["x-client-trace-id"] = random_request_id(rng)
    request_id = predicted = None
    if sends.xrid is not None:
        request_id, predicted = _request_id(sends.xrid, rng, options)
        headers["x-request-id"] = request_id
    return Injection(headers, trace_id, span_id, spec.flag, request_id, predicted)


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


def parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """W3C `{version}-{trace}-{parent}-{flags}` -> (trace, span, "1"/"0"); None if malformed."""
    parts = value.strip().lower().split("-")
    if len(parts) < 4 or not is_hex_id(parts[1], (32,)) or not is_hex_id(parts[2], (16,)):
        return None
    try:
        flags = int(parts[3], 16)
    except ValueError:
        return None
    return parts[1], parts[2], "1" if flags & 1 else "0"


def parse_echo(headers: Mapping[str, object]) -> UpstreamView:
    """Read an echo of request headers (any case). `b3` wins over `X-B3-*` as it does in Envoy;
    a `traceparent` counts only when no B3 context came along (Envoy always adds B3 upstream).

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
