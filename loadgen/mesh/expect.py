"""What Envoy 1.40 does with a request, given what it carries and how the mesh is configured
(pure: no I/O). Every rule was measured on the real binary (shared/ENVOY-NOTES.md;
tests/integration/test_header_matrix.py and test_mesh_knobs.py re-measure them).

`expect()` applies Envoy's steps in Envoy's order:
1. an unparsable B3 trace id: no span at all;
2. the incoming context (`_incoming`): a client's sampled flag wins either way;
3. without a flag, Envoy's forcing rules (`_FORCING_RULES`, first match wins), each then subject to
   `overall_sampling` (`_forced`);
4. otherwise random sampling on the x-request-id (`_random`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import NamedTuple

from loadgen.mesh.rule import sampling_threshold
from loadgen.mesh.sends import B3Form, Sends, XridKind
from loadgen.mesh.tracer import TRACERS, TracerFamily

__all__ = [
    "DEFAULT_CONTEXT",
    "TRACER_RULES",
    "Decision",
    "ExpectationContext",
    "Expected",
    "TracerRules",
    "expect",
]


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
    tracer: TracerFamily = TracerFamily.ZIPKIN  # the Envoys' tracer (loadgen.mesh.tracer)
    w3c: bool = False  # ZipkinConfig.trace_context_option USE_B3_WITH_W3C_PROPAGATION
    use_remote_address: bool = True
    preserve_external_request_id: bool = False
    client_internal: bool = False  # the client is inside the gateway's internal_address_config
    client_sampling_percent: float = 100.0  # tracing.client_sampling (x-client-trace-id)
    overall_sampling_percent: float = 100.0  # the gateway's tracing.overall_sampling (Istio: 100)

    def __post_init__(self) -> None:
        # run.json gives the tracer back as a plain string
        object.__setattr__(self, "tracer", TracerFamily(self.tracer))

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
    #: "multi" (X-B3-*) or "single" (b3): Zipkin answers in the format it got; "forwarded" (the
    #: client's B3 untouched) or "absent": the OpenTelemetry tracer writes no B3
    upstream_b3: str
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


class _Incoming(NamedTuple):
    """The client's trace context as Envoy reads it: the sampled flag it honours, where that came
    from (for the reason text), and whether our trace id is continued (None: none sent)."""

    flag: str | None = None
    source: str = ""
    keeps: bool | None = None


@dataclass(frozen=True)
class TracerRules:
    """What one tracer family does with the client's trace context: measured on Envoy 1.40
    (tests/integration/test_header_matrix.py runs every mode under both), kept as data."""

    family: TracerFamily
    w3c_flags: dict[str, str | None]  # traceparent flags -> the sampled flag the tracer honours
    invalid_w3c_untraced: bool  # an unparsable traceparent: no span at all, forwarded untouched
    b3_upstream: str | None  # None: Envoy answers in the B3 format it got; else a fixed value

    @property
    def reads_b3(self) -> bool:
        """B3 contexts are honoured (else forwarded untouched and ignored): mesh.tracer.TRACERS."""
        return "b3" in TRACERS[self.family].honours

    @property
    def w3c_always(self) -> bool:
        """traceparent is honoured whatever ExpectationContext.w3c says: mesh.tracer.TRACERS."""
        return "traceparent" in TRACERS[self.family].honours


TRACER_RULES: dict[TracerFamily, TracerRules] = {
    # Zipkin: B3 wins; traceparent only under USE_B3_WITH_W3C_PROPAGATION, where its flag decides
    # both ways; an unparsable traceparent is ignored (a new trace, Envoy decides).
    TracerFamily.ZIPKIN: TracerRules(
        TracerFamily.ZIPKIN, w3c_flags={"01": "1", "00": "0"},
        invalid_w3c_untraced=False, b3_upstream=None,
    ),
    # OpenTelemetry: B3 forwarded untouched and ignored (Envoy writes none); traceparent keeps the
    # trace id, its 00 vetoes every decision (even x-client-trace-id) while 01 forces nothing;
    # an unparsable traceparent means no span at all (the tracer gives up, like an unparsable
    # X-B3-TraceId under Zipkin) and the client's header is forwarded untouched.
    TracerFamily.OPENTELEMETRY: TracerRules(
        TracerFamily.OPENTELEMETRY, w3c_flags={"01": None, "00": "0"},
        invalid_w3c_untraced=True, b3_upstream="forwarded",
    ),
}  # fmt: skip


def _incoming(sends: Sends, ctx: ExpectationContext) -> _Incoming:
    """B3 ids beat W3C; W3C counts only under USE_B3_WITH_W3C_PROPAGATION (Zipkin) or always
    (OpenTelemetry, which ignores B3). X-B3-Flags: 1 is not a sampling decision in Envoy.
    Measured under W3C propagation: X-B3 ids *without* a sampled flag keep the B3 trace id but
    take traceparent's flag (a `b3` single header without flag does not); B3 without ids yields
    to traceparent's ids, and either sampled flag then samples."""
    rules = TRACER_RULES[ctx.tracer]
    honours_w3c = (ctx.w3c or rules.w3c_always) and sends.w3c is not None and not sends.w3c_invalid
    w3c_flag = None if sends.w3c is None else rules.w3c_flags[sends.w3c]
    b3 = sends.b3 if rules.reads_b3 else None
    if b3 is not None and sends.b3_ids:
        if sends.b3_flag is None and honours_w3c and w3c_flag is not None and b3 is B3Form.MULTI:
            return _Incoming(w3c_flag, "B3 ids with traceparent's flag", True)
        return _Incoming(sends.b3_flag, "B3", True)
    if honours_w3c:
        b3_samples = b3 is B3Form.MULTI and sends.b3_flag in ("1", "d")
        return _Incoming("1" if b3_samples else w3c_flag, "traceparent", True)
    if b3 is not None:
        if sends.b3_flag is not None:
            return _Incoming(sends.b3_flag, "B3 flag without ids")
        return _Incoming(None, "B3 without ids or flag")
    if sends.w3c is not None:
        why = "unparsable traceparent ignored" if sends.w3c_invalid else "traceparent ignored under USE_B3"
        return _Incoming(None, why, None if sends.w3c_invalid else False)
    if sends.b3 is not None:
        return _Incoming(None, "B3 forwarded untouched (ignored)", False if sends.b3_ids else None)
    return _Incoming()


class _Outcome(NamedTuple):
    """The decision-specific fields of an `Expected` (the rest follows from sends and ctx)."""

    decision: Decision
    upstream: bool | None
    reason: str
    predictable: bool = False
    proxy_percent: float | None = None
    traceparent: str | None = None  # None: what ctx.w3c implies


#: A client's sampled flag: the decision it forces and what the upstream sees.
_FLAG_DECISIONS = {
    "1": (Decision.FORCED_SAMPLED, True),
    "d": (Decision.FORCED_SAMPLED, True),
    "0": (Decision.FORCED_NOT_SAMPLED, False),
}


class _Force(Enum):
    NEVER = "never"  # Envoy cannot trace it
    FORCED = "forced"  # traced, subject to overall_sampling (`_forced`)
    COIN = "coin"  # a runtime coin the client cannot see


#: Envoy's rules for a request without a sampled flag, in Envoy's order (first match wins). Each
#: predicate sees (sends, ctx, kept_id): kept_id is "our x-request-id reaches the upstream".
_FORCING_RULES: tuple[tuple[Callable[[Sends, ExpectationContext, bool], bool], _Force, str], ...] = (
    (lambda s, c, kept: kept and s.xrid is XridKind.NON_UUID,
     _Force.NEVER, "kept non-hex x-request-id: never traced"),
    (lambda s, c, kept: kept and s.xrid is XridKind.FORCED and c.honours_client_trace_reason,
     _Force.FORCED, "kept x-request-id marked forced (char 14 'a')"),
    (lambda s, c, kept: s.client_trace_id and c.client_sampling_percent >= 100.0,
     _Force.FORCED, "x-client-trace-id at client_sampling 100"),
    (lambda s, c, kept: s.client_trace_id and 0.0 < c.client_sampling_percent < 100.0,
     _Force.COIN, "x-client-trace-id at 0 < client_sampling < 100"),
    (lambda s, c, kept: s.force_trace and c.client_internal,
     _Force.FORCED, "x-envoy-force-trace from an internal client"),
)  # fmt: skip


def _forced(what: str, overall: float, kept_id: bool) -> _Outcome:
    """A forced decision, vetoed by overall_sampling on the x-request-id the gateway ends up with:
    PROXY at `overall` when that id is ours (known before sending), UNPREDICTABLE when Envoy made
    it, never traced at overall 0."""
    threshold = sampling_threshold(overall)
    if threshold >= 10000:
        return _Outcome(Decision.FORCED_SAMPLED, True, what)
    if threshold <= 0:
        return _Outcome(Decision.NEVER_TRACED, False, what + f", vetoed by overall_sampling {overall:g}")
    if kept_id:
        why = what + f", kept iff our x-request-id passes overall_sampling {overall:g} %"
        return _Outcome(Decision.PROXY, None, why, predictable=True, proxy_percent=overall)
    why = what + f", vetoed by overall_sampling {overall:g} % on Envoy's own x-request-id"
    return _Outcome(Decision.UNPREDICTABLE, None, why)


def _random(sends: Sends, ctx: ExpectationContext, kept_id: bool, why: str) -> _Outcome:
    """Random sampling on the x-request-id, at min(random_sampling, overall_sampling)."""
    source = "our kept x-request-id" if kept_id else "Envoy's x-request-id"
    detail = f"{why}random sampling on {source}"
    if sends.force_trace:
        detail += " (x-envoy-force-trace stripped: external client)"
    overall, percent = ctx.overall_sampling_percent, ctx.sampling_percent
    if sampling_threshold(overall) < 10000:
        detail += f", capped by overall_sampling {overall:g} %"
        percent = None if percent is None else min(percent, overall)
    return _Outcome(Decision.PROXY, None, detail, predictable=kept_id, proxy_percent=percent)


def _decide(sends: Sends, ctx: ExpectationContext, incoming: _Incoming) -> _Outcome:
    if incoming.flag in _FLAG_DECISIONS:
        decision, upstream = _FLAG_DECISIONS[incoming.flag]
        return _Outcome(decision, upstream, f"{incoming.source} sampled flag {incoming.flag!r} wins")
    why = incoming.source + "; " if incoming.source else ""
    kept_id = sends.xrid is not None and ctx.keeps_client_request_id
    for applies, force, what in _FORCING_RULES:
        if not applies(sends, ctx, kept_id):
            continue
        if force is _Force.FORCED:
            return _forced(why + what, ctx.overall_sampling_percent, kept_id)
        if force is _Force.NEVER:
            return _Outcome(Decision.NEVER_TRACED, False, why + what)
        return _Outcome(Decision.UNPREDICTABLE, None, why + what)
    return _random(sends, ctx, kept_id, why)


def _upstream_b3(sends: Sends, rules: TracerRules) -> str:
    """Zipkin answers in the B3 format it got (multi when none); the OpenTelemetry tracer writes
    no B3: the client's own headers are "forwarded" untouched, or there are none ("absent")."""
    if rules.b3_upstream is None:
        return (sends.b3 or B3Form.MULTI).value
    return rules.b3_upstream if sends.b3 is not None else "absent"


def expect(sends: Sends, ctx: ExpectationContext = DEFAULT_CONTEXT) -> Expected:
    """Pure: Envoy 1.40's behaviour for a request carrying `sends` at a gateway configured as
    `ctx` (then through a sidecar).

    overall_sampling below 100 (measured, docs/header-modes.md "overall_sampling"): a client's sampled flag is
    untouched; every decision Envoy makes itself is vetoed unless
    `int(xrid[0:8], 16) % 10000 < int(10000 * overall / 100)` on the x-request-id the gateway
    ends up with. Random sampling thus decides at min(random, overall) (PROXY); a forced
    decision (x-client-trace-id, x-envoy-force-trace, a kept forced id) is PROXY at `overall`
    when the id is the client's own (known before sending), UNPREDICTABLE when Envoy made the id,
    and never traced at overall 0."""
    rules = TRACER_RULES[ctx.tracer]
    stale_or_absent = "stale" if sends.w3c else "absent"
    rewritten = ctx.w3c or rules.w3c_always
    if sends.b3_invalid_trace and rules.reads_b3:
        # The Zipkin tracer gives up (a null span); the client's headers go upstream untouched,
        # so the upstream sees the client's own flag.
        sent = sends.b3_flag
        keeps = None
        outcome = _Outcome(
            Decision.NEVER_TRACED, None if sent is None else sent in ("1", "d"),
            "unparsable X-B3-TraceId: no span at all, client headers forwarded untouched",
            traceparent=stale_or_absent,
        )  # fmt: skip
    elif sends.w3c_invalid and rules.invalid_w3c_untraced:
        # The OpenTelemetry tracer gives up: no span, the unparsable traceparent goes upstream
        # untouched (its flag is the client's, which parse_traceparent does not read as a decision).
        keeps = None
        outcome = _Outcome(
            Decision.NEVER_TRACED, None,
            "unparsable traceparent: no span at all, forwarded untouched", traceparent="stale",
        )  # fmt: skip
    else:
        incoming = _incoming(sends, ctx)
        keeps, outcome = incoming.keeps, _decide(sends, ctx, incoming)
    return Expected(
        decision=outcome.decision,
        keeps_trace_id=keeps,
        upstream_sampled=outcome.upstream,
        predictable_before_send=outcome.predictable,
        request_id_kept=None if sends.xrid is None else ctx.keeps_client_request_id,
        upstream_b3=_upstream_b3(sends, rules),
        traceparent=outcome.traceparent or ("rewritten" if rewritten else stale_or_absent),
        client_span_is_parent=bool(keeps),
        reason=outcome.reason,
        proxy_percent=outcome.proxy_percent,
    )
