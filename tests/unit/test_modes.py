"""The header-mode matrix as data: encoders, crafted x-request-ids, k6-style trace ids, the
config-aware expectations and the per-mode checks in reconciliation.

The expected tables below are written out by hand from the measurements (shared/ENVOY-NOTES.md
and tests/integration/test_header_matrix.py against Envoy 1.40), not computed by the code."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.analysis.reconcile import Expectation, TraceObservation, ledger_trace_id, reconcile_mesh
from loadgen.backends.base import FetchStatus
from loadgen.mesh.echo import parse_echo, parse_traceparent, same_request_id
from loadgen.mesh.encode import EncodeOptions, encode
from loadgen.mesh.expect import DEFAULT_CONTEXT, Decision, ExpectationContext
from loadgen.mesh.ids import IdStyle, craft_request_id, k6_trace_id, k6_trace_time_ns
from loadgen.mesh.modes import LEGACY_MODES, MODE_SPECS, HeaderMode
from loadgen.mesh.rule import craft_head, envoy_random_sampled, sampling_threshold, xrid_decision
from loadgen.mesh.tracer import TracerFamily
from loadgen.stack.envoy import ProxySpec, TraceContextOption, TracingConfig, render_bootstrap

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
M = HeaderMode

# --- expectations per mode and mesh configuration ------------------------------------------------

ISTIO = DEFAULT_CONTEXT  # edge, replaces client x-request-ids, B3 only
W3C = ExpectationContext(w3c=True)
KEEP = ExpectationContext(preserve_external_request_id=True)  # an edge that keeps client ids
INTERNAL = ExpectationContext(client_internal=True)  # the client is in internal_address_config
NO_EDGE = ExpectationContext(use_remote_address=False)
CS0 = ExpectationContext(client_sampling_percent=0.0)

S, Z, P, N = (Decision.FORCED_SAMPLED, Decision.FORCED_NOT_SAMPLED, Decision.PROXY, Decision.NEVER_TRACED)
# mode: decision at ISTIO, W3C, KEEP, INTERNAL, NO_EDGE, CS0
TABLE: dict[HeaderMode, tuple[Decision, ...]] = {
    M.NONE: (P, P, P, P, P, P),
    M.B3_MULTI_SAMPLED: (S, S, S, S, S, S),
    M.B3_MULTI_NOT_SAMPLED: (Z, Z, Z, Z, Z, Z),
    M.B3_MULTI_NO_FLAG: (P, P, P, P, P, P),
    M.B3_MULTI_SAMPLED_PARENT: (S, S, S, S, S, S),
    M.B3_MULTI_NOT_SAMPLED_PARENT: (Z, Z, Z, Z, Z, Z),
    M.B3_MULTI_NO_FLAG_PARENT: (P, P, P, P, P, P),
    M.B3_MULTI_SAMPLED_64: (S, S, S, S, S, S),
    M.B3_MULTI_NOT_SAMPLED_64: (Z, Z, Z, Z, Z, Z),
    M.B3_MULTI_NO_FLAG_64: (P, P, P, P, P, P),
    M.B3_MULTI_SAMPLED_64_PARENT: (S, S, S, S, S, S),
    M.B3_MULTI_NOT_SAMPLED_64_PARENT: (Z, Z, Z, Z, Z, Z),
    M.B3_MULTI_NO_FLAG_64_PARENT: (P, P, P, P, P, P),
    M.B3_MULTI_DEBUG: (P, P, P, P, P, P),  # X-B3-Flags: 1 forces nothing in Envoy
    M.B3_MULTI_DEBUG_NOT_SAMPLED: (Z, Z, Z, Z, Z, Z),
    M.B3_FLAGS_ONLY: (P, P, P, P, P, P),
    M.B3_SAMPLED_ONLY: (S, S, S, S, S, S),
    M.B3_NOT_SAMPLED_ONLY: (Z, Z, Z, Z, Z, Z),
    M.B3_MULTI_INVALID_TRACE: (N, N, N, N, N, N),
    M.B3_SINGLE_SAMPLED: (S, S, S, S, S, S),
    M.B3_SINGLE_NOT_SAMPLED: (Z, Z, Z, Z, Z, Z),
    M.B3_SINGLE_NO_FLAG: (P, P, P, P, P, P),
    M.B3_SINGLE_DEBUG: (S, S, S, S, S, S),
    M.B3_SINGLE_SAMPLED_PARENT: (S, S, S, S, S, S),
    M.B3_SINGLE_NOT_SAMPLED_PARENT: (Z, Z, Z, Z, Z, Z),
    M.B3_SINGLE_DEBUG_PARENT: (S, S, S, S, S, S),
    M.B3_SINGLE_DENY: (Z, Z, Z, Z, Z, Z),
    M.B3_SINGLE_DEBUG_ONLY: (S, S, S, S, S, S),
    M.W3C_SAMPLED: (P, S, P, P, P, P),
    M.W3C_NOT_SAMPLED: (P, Z, P, P, P, P),
    M.W3C_SAMPLED_TRACESTATE: (P, S, P, P, P, P),
    M.W3C_NOT_SAMPLED_TRACESTATE: (P, Z, P, P, P, P),
    M.W3C_SAMPLED_B3_NOT_SAMPLED: (Z, Z, Z, Z, Z, Z),
    M.W3C_NOT_SAMPLED_B3_SAMPLED: (S, S, S, S, S, S),
    M.W3C_SAMPLED_B3_NO_FLAG: (P, S, P, P, P, P),  # B3 ids, traceparent's flag under W3C
    M.W3C_NOT_SAMPLED_B3_NO_FLAG: (P, Z, P, P, P, P),
    M.W3C_NOT_SAMPLED_B3_SINGLE_SAMPLED: (S, S, S, S, S, S),
    M.W3C_SAMPLED_CLIENT_TRACE_ID: (S, S, S, S, S, P),
    M.W3C_NOT_SAMPLED_CLIENT_TRACE_ID: (S, Z, S, S, S, P),  # traceparent's 00 wins under W3C
    M.W3C_INVALID_TRACE: (P, P, P, P, P, P),  # Zipkin ignores it
    M.FORCE_TRACE: (P, P, P, S, P, P),  # only internal clients may force
    M.FORCE_TRACE_NOT_SAMPLED: (Z, Z, Z, Z, Z, Z),
    M.CLIENT_TRACE_ID: (S, S, S, S, S, P),  # while client_sampling is 100
    M.CLIENT_TRACE_ID_NOT_SAMPLED: (Z, Z, Z, Z, Z, Z),
    M.XRID_RANDOM: (P, P, P, P, P, P),
    M.XRID_CRAFTED: (P, P, P, P, P, P),
    M.XRID_FORCED: (P, P, P, S, S, P),  # the 'a' mark survives only off the edge
    M.XRID_NON_UUID: (P, P, N, N, N, P),  # never traced once kept
    M.XRID_NO_DASHES: (P, P, P, P, P, P),
}
CONTEXT_COLUMNS = (ISTIO, W3C, KEEP, INTERNAL, NO_EDGE, CS0)


def test_the_table_covers_every_mode() -> None:
    assert set(TABLE) == set(HeaderMode) == set(MODE_SPECS)


@pytest.mark.parametrize("mode", list(HeaderMode))
def test_decision_per_configuration(mode: HeaderMode) -> None:
    got = tuple(MODE_SPECS[mode].expected(ctx).decision for ctx in CONTEXT_COLUMNS)
    assert got == TABLE[mode]


# mode: trace id kept under (USE_B3, W3C); None: the mode sends no usable trace id
KEEPS: dict[HeaderMode, tuple[bool | None, bool | None]] = {
    **{m: (True, True) for m in HeaderMode if m.value.startswith(("b3_multi_", "b3_single_")) and m not in (
        M.B3_SINGLE_DENY, M.B3_SINGLE_DEBUG_ONLY, M.B3_MULTI_INVALID_TRACE)},
    M.W3C_SAMPLED: (False, True),
    M.W3C_NOT_SAMPLED: (False, True),
    M.W3C_SAMPLED_TRACESTATE: (False, True),
    M.W3C_NOT_SAMPLED_TRACESTATE: (False, True),
    M.W3C_SAMPLED_B3_NOT_SAMPLED: (True, True),
    M.W3C_NOT_SAMPLED_B3_SAMPLED: (True, True),
    M.W3C_SAMPLED_B3_NO_FLAG: (True, True),
    M.W3C_NOT_SAMPLED_B3_NO_FLAG: (True, True),
    M.W3C_NOT_SAMPLED_B3_SINGLE_SAMPLED: (True, True),
    M.FORCE_TRACE_NOT_SAMPLED: (True, True),
    M.CLIENT_TRACE_ID_NOT_SAMPLED: (True, True),
    M.W3C_SAMPLED_CLIENT_TRACE_ID: (False, True),
    M.W3C_NOT_SAMPLED_CLIENT_TRACE_ID: (False, True),
}  # fmt: skip


@pytest.mark.parametrize("mode", list(HeaderMode))
def test_trace_id_kept_per_configuration(mode: HeaderMode) -> None:
    spec = MODE_SPECS[mode]
    got = (spec.expected(ISTIO).keeps_trace_id, spec.expected(W3C).keeps_trace_id)
    assert got == KEEPS.get(mode, (None, None))
    # Our span becomes the gateway span's parent exactly when our ids are continued.
    assert spec.expected(W3C).client_span_is_parent is bool(got[1])


# --- Envoy's OpenTelemetry tracer (measured on Envoy 1.40: /work/notes/H-tracer.md) ------------

OTEL = ExpectationContext(tracer=TracerFamily.OPENTELEMETRY)
OTEL_KEEP = ExpectationContext(tracer=TracerFamily.OPENTELEMETRY, preserve_external_request_id=True)
OTEL_INTERNAL = ExpectationContext(tracer=TracerFamily.OPENTELEMETRY, client_internal=True)
#: Every mode not listed is Envoy's own random decision (PROXY) at an OpenTelemetry edge: B3 of
#: any kind is ignored, and traceparent 01 forces nothing.
OTEL_TABLE: dict[HeaderMode, Decision] = {
    M.W3C_NOT_SAMPLED: Z,
    M.W3C_NOT_SAMPLED_TRACESTATE: Z,
    M.W3C_NOT_SAMPLED_B3_SAMPLED: Z,
    M.W3C_NOT_SAMPLED_B3_NO_FLAG: Z,
    M.W3C_NOT_SAMPLED_B3_SINGLE_SAMPLED: Z,
    M.W3C_NOT_SAMPLED_CLIENT_TRACE_ID: Z,  # the 00 vetoes even x-client-trace-id
    M.W3C_SAMPLED_CLIENT_TRACE_ID: S,
    M.CLIENT_TRACE_ID: S,
    M.CLIENT_TRACE_ID_NOT_SAMPLED: S,  # its B3 Sampled: 0 is ignored
    M.W3C_INVALID_TRACE: N,  # no span at all
}


@pytest.mark.parametrize("mode", list(HeaderMode))
def test_decision_under_the_opentelemetry_tracer(mode: HeaderMode) -> None:
    exp = MODE_SPECS[mode].expected(OTEL)
    assert exp.decision is OTEL_TABLE.get(mode, P)
    # Kept trace id: exactly a valid traceparent's; B3 ids are never continued.
    sends = MODE_SPECS[mode].sends
    want_keeps = True if sends.w3c and not sends.w3c_invalid else (False if sends.b3_ids else None)
    assert exp.keeps_trace_id is want_keeps
    assert exp.upstream_b3 == ("forwarded" if sends.b3 else "absent")
    assert exp.traceparent == ("stale" if sends.w3c_invalid else "rewritten")
    # The x-request-id rules are the connection manager's, the same under both tracers.
    for zipkin, otel in ((KEEP, OTEL_KEEP), (INTERNAL, OTEL_INTERNAL)):
        if not (sends.b3 or sends.w3c):
            assert MODE_SPECS[mode].expected(otel).decision is MODE_SPECS[mode].expected(zipkin).decision


def test_the_tracer_comes_back_from_run_json_as_an_enum() -> None:
    run_json: dict[str, Any] = {"tracer": "opentelemetry", "sampling_percent": 5.0}
    ctx = ExpectationContext(**run_json)
    assert ctx.tracer is TracerFamily.OPENTELEMETRY and ctx == replace(OTEL, sampling_percent=5.0)
    with pytest.raises(ValueError):
        ExpectationContext(tracer="jaeger")  # type: ignore[arg-type]


def test_upstream_decision_and_spans_follow_the_decision() -> None:
    for mode, spec in MODE_SPECS.items():
        for ctx in (*CONTEXT_COLUMNS, OTEL):
            exp = spec.expected(ctx)
            want_spans = {S: True, Z: False, N: False, P: None}[exp.decision]
            assert exp.spans is want_spans, (mode, ctx)
            if exp.decision in (S, Z):
                assert exp.upstream_sampled is (exp.decision is S), (mode, ctx)
            if exp.decision is P:
                assert exp.upstream_sampled is None
    # Never traced: an unparsable trace id goes upstream with the client's own flag (1) ...
    assert MODE_SPECS[M.B3_MULTI_INVALID_TRACE].expected().upstream_sampled is True
    # ... a kept non-hex x-request-id with Envoy's X-B3-Sampled: 0.
    assert MODE_SPECS[M.XRID_NON_UUID].expected(KEEP).upstream_sampled is False


def test_request_id_kept_and_predictable_only_where_the_gateway_keeps_it() -> None:
    for ctx, kept in ((ISTIO, False), (W3C, False), (KEEP, True), (INTERNAL, True), (NO_EDGE, True)):
        for mode in (M.XRID_RANDOM, M.XRID_CRAFTED, M.XRID_NO_DASHES):
            exp = MODE_SPECS[mode].expected(ctx)
            assert exp.request_id_kept is kept and exp.predictable_before_send is kept
    assert MODE_SPECS[M.NONE].expected(KEEP).request_id_kept is None  # nothing sent
    assert MODE_SPECS[M.NONE].expected(KEEP).predictable_before_send is False  # Envoy's own id


def test_upstream_format_and_traceparent() -> None:
    single = {m for m in HeaderMode if "single" in m.value}
    for mode, spec in MODE_SPECS.items():
        assert spec.expected().upstream_b3 == ("single" if mode in single else "multi"), mode
        sends_tp = spec.sends.w3c is not None
        assert spec.expected(ISTIO).traceparent == ("stale" if sends_tp else "absent"), mode
        want_w3c = "rewritten" if mode is not M.B3_MULTI_INVALID_TRACE else "absent"
        assert spec.expected(W3C).traceparent == want_w3c, mode


def test_client_sampling_between_0_and_100_is_unpredictable() -> None:
    ctx = ExpectationContext(client_sampling_percent=50.0)
    exp = MODE_SPECS[M.CLIENT_TRACE_ID].expected(ctx)
    assert exp.decision is Decision.UNPREDICTABLE and exp.spans is None and exp.upstream_sampled is None
    assert MODE_SPECS[M.CLIENT_TRACE_ID_NOT_SAMPLED].expected(ctx).decision is Z  # the 0 still wins


def test_legacy_decision_attribute_is_the_istio_default_in_three_kinds() -> None:
    for mode in LEGACY_MODES:
        assert MODE_SPECS[mode].decision is MODE_SPECS[mode].expected().decision
    assert MODE_SPECS[M.B3_MULTI_INVALID_TRACE].decision is Z  # never traced reads as not sampled
    assert {spec.decision for spec in MODE_SPECS.values()} == {S, Z, P}


def test_expectation_context_of_the_embedded_mesh() -> None:
    assert TracingConfig().expectation_context() == ExpectationContext(sampling_percent=100.0)
    ctx = TracingConfig(
        sampling_percent=10.0,
        trace_context_option=TraceContextOption.USE_B3_WITH_W3C_PROPAGATION,
        gateway_preserve_external_request_id=True,
        client_sampling_percent=0.0,
    ).expectation_context()
    assert (ctx.sampling_percent, ctx.w3c, ctx.keeps_client_request_id, ctx.edge_request) == (
        10.0,
        True,
        True,
        True,
    )
    assert ctx.client_sampling_percent == 0.0
    internal = TracingConfig(gateway_internal_cidrs=("127.0.0.1/32",)).expectation_context()
    assert internal.client_internal and not internal.edge_request and internal.keeps_client_request_id
    assert not TracingConfig().expectation_context().keeps_client_request_id
    no_edge = TracingConfig(gateway_use_remote_address=False).expectation_context()
    assert no_edge.honours_client_trace_reason and not no_edge.client_internal


def test_render_bootstrap_request_id_knobs() -> None:
    spec = ProxySpec("gateway", "gw", "up", 1, 2, edge=True)
    hcm = render_bootstrap(spec, TracingConfig())["static_resources"]["listeners"][0]["filter_chains"][0]
    hcm = hcm["filters"][0]["typed_config"]
    assert hcm["use_remote_address"] is True and hcm["preserve_external_request_id"] is False
    assert "internal_address_config" not in hcm and hcm["tracing"]["client_sampling"] == {"value": 100.0}
    spec = replace(
        spec, edge=False, preserve_external_request_id=True, internal_cidrs=("127.0.0.1/32", "::1")
    )
    hcm = render_bootstrap(spec, TracingConfig(client_sampling_percent=25.0))["static_resources"][
        "listeners"
    ][0]
    hcm = hcm["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["use_remote_address"] is False and hcm["preserve_external_request_id"] is True
    assert hcm["internal_address_config"] == {
        "cidr_ranges": [
            {"address_prefix": "127.0.0.1", "prefix_len": 32},
            {"address_prefix": "::1", "prefix_len": 128},
        ]
    }
    assert hcm["tracing"]["client_sampling"] == {"value": 25.0}


# --- crafted x-request-ids ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "threshold"), [(10.0, 1000), (33.33, 3333), (0.29, 28), (0.57, 56), (100.0, 10000), (0.0, 0)]
)
def test_sampling_threshold_truncates_like_envoy(percent: float, threshold: int) -> None:
    # In binary floating point 10000 * (0.29 / 100.0) = 28.999999999999996 and 0.57 gives
    # 56.99999999999999; Envoy's uint64_t cast truncates them (ENVOY-NOTES: "0.29 % means
    # 28/10000"). 33.33 gives exactly 3333.0 (the integration test sends residues 3332 and 3333).
    assert sampling_threshold(percent) == threshold


@given(st.floats(min_value=0.0, max_value=100.0, allow_nan=False), st.booleans(), st.integers(0, 2**32))
def test_crafted_ids_get_the_wanted_decision(percent: float, sampled: bool, seed: int) -> None:
    threshold = int(10000 * (percent / 100.0))
    possible = threshold > 0 if sampled else threshold < 10000
    rng = random.Random(seed)
    if not possible:
        with pytest.raises(ValueError):
            craft_request_id(rng, percent, sampled)
        return
    rid = craft_request_id(rng, percent, sampled)
    assert UUID4.match(rid), rid
    assert (int(rid[:8], 16) % 10000 < threshold) is sampled
    assert envoy_random_sampled(rid, percent) is sampled
    assert xrid_decision(rid) is False  # char 14 is the version nibble '4': "not traced" yet
    bare = craft_request_id(rng, percent, sampled, dashes=False)
    assert re.fullmatch(r"[0-9a-f]{32}", bare) and envoy_random_sampled(bare, percent) is sampled


def test_crafted_heads_spread_over_the_allowed_residues() -> None:
    rng = random.Random(1)
    residues = Counter(craft_head(rng, 0.05, True) % 10000 for _ in range(500))
    assert set(residues) == set(range(5))  # 0.05 % -> threshold 5: residues 0..4, all used
    heads = [craft_head(rng, 50.0, False) for _ in range(2000)]
    assert all(5000 <= h % 10000 < 10000 and 0 <= h <= 0xFFFFFFFF for h in heads)
    assert max(heads) > 0xF0000000 and min(heads) < 0x10000000  # the whole 32-bit range


@pytest.mark.parametrize("mode", [M.XRID_CRAFTED, M.XRID_NO_DASHES])
def test_encode_crafted_mode_records_the_prediction(mode: HeaderMode) -> None:
    rng = random.Random(2)
    injections = [encode(mode, rng, EncodeOptions(crafted_percent=10.0)) for _ in range(2000)]
    for inj in injections:
        assert inj.headers == {"x-request-id": inj.request_id}
        assert inj.predicted is envoy_random_sampled(str(inj.request_id), 10.0)
        assert inj.trace_id is None and inj.flag is None
    share = sum(bool(inj.predicted) for inj in injections) / len(injections)
    assert 0.45 < share < 0.55  # half crafted sampled, not the 10 % a random id would give
    shape = UUID4 if mode is M.XRID_CRAFTED else re.compile(r"^[0-9a-f]{32}$")
    assert all(shape.match(str(inj.request_id)) for inj in injections)


@pytest.mark.parametrize(
    ("percent", "fraction", "want"),
    [
        (10.0, 0.0, {False}),
        (10.0, 1.0, {True}),
        (0.0, 1.0, {False}),
        (100.0, 0.0, {True}),
        (None, 0.5, {None}),
    ],
)
def test_encode_crafted_fraction_and_impossible_answers(
    percent: float | None, fraction: float, want: set
) -> None:
    rng = random.Random(3)
    options = EncodeOptions(crafted_percent=percent, crafted_sampled_fraction=fraction)
    got = {encode(M.XRID_CRAFTED, rng, options).predicted for _ in range(200)}
    assert got == want


def test_random_request_ids_record_a_prediction_only_with_a_percent() -> None:
    rng = random.Random(4)
    with_p = [encode(M.XRID_RANDOM, rng, EncodeOptions(crafted_percent=10.0)) for _ in range(3000)]
    assert all(UUID4.match(str(i.request_id)) for i in with_p)
    share = sum(bool(i.predicted) for i in with_p) / len(with_p)
    assert 0.07 < share < 0.13  # a random id is sampled about 10 % of the time
    assert encode(M.XRID_RANDOM, rng).predicted is None


def test_other_request_id_kinds() -> None:
    rng = random.Random(5)
    forced = encode(M.XRID_FORCED, rng).request_id
    assert forced is not None and len(forced) == 36 and forced[14] == "a" and xrid_decision(forced) is True
    non_uuid = encode(M.XRID_NON_UUID, rng, EncodeOptions(crafted_percent=10.0))
    assert envoy_random_sampled(str(non_uuid.request_id), 100.0) is None and non_uuid.predicted is None


def test_same_request_id_ignores_char_14_and_case() -> None:
    sent = "0000270f-0123-4567-89ab-cdef01234567"
    assert same_request_id(sent, "0000270F-0123-9567-89AB-CDEF01234567")
    assert not same_request_id(sent, "0000270e-0123-4567-89ab-cdef01234567")
    assert not same_request_id(sent, sent.replace("-", ""))
    assert not same_request_id(None, sent) and not same_request_id(sent, None)


def test_same_request_id_keeps_a_short_id_echoed_unchanged() -> None:
    # Envoy rewrites character 14 only of a UUID it keeps; an id shorter than that (a non-UUID
    # client id, mode xrid_non_uuid) reaches the upstream as sent, so an equal echo means kept.
    # (The doctor's former copy required 15+ characters and called such an id regenerated.)
    assert same_request_id("loadgen-x", "loadgen-x")
    assert same_request_id("loadgen-x", "LOADGEN-X")
    assert not same_request_id("loadgen-x", "loadgen-y")
    assert not same_request_id("", "")


# --- encoders ------------------------------------------------------------------------------------

HEX16, HEX32 = re.compile(r"^[0-9a-f]{16}$"), re.compile(r"^[0-9a-f]{32}$")


def test_b3_multi_variants() -> None:
    rng = random.Random(6)
    inj = encode(M.B3_MULTI_NOT_SAMPLED_64_PARENT, rng)
    h = inj.headers
    assert set(h) == {"X-B3-TraceId", "X-B3-SpanId", "X-B3-ParentSpanId", "X-B3-Sampled"}
    assert HEX16.match(h["X-B3-TraceId"]) and h["X-B3-TraceId"] == inj.trace_id
    assert h["X-B3-ParentSpanId"] not in (h["X-B3-SpanId"], h["X-B3-TraceId"]) and h["X-B3-Sampled"] == "0"
    assert set(encode(M.B3_MULTI_NO_FLAG_PARENT, rng).headers) == {
        "X-B3-TraceId",
        "X-B3-SpanId",
        "X-B3-ParentSpanId",
    }
    debug = encode(M.B3_MULTI_DEBUG, rng)
    assert debug.headers["X-B3-Flags"] == "1" and "X-B3-Sampled" not in debug.headers and debug.flag is None
    assert encode(M.B3_FLAGS_ONLY, rng).headers == {"X-B3-Flags": "1"}
    assert encode(M.B3_SAMPLED_ONLY, rng).headers == {"X-B3-Sampled": "1"}
    assert encode(M.B3_NOT_SAMPLED_ONLY, rng).headers == {"X-B3-Sampled": "0"}
    bad = encode(M.B3_MULTI_INVALID_TRACE, rng)
    assert not HEX16.match(bad.headers["X-B3-TraceId"]) and not HEX32.match(bad.headers["X-B3-TraceId"])
    assert bad.headers["X-B3-Sampled"] == "1"


def test_b3_single_variants() -> None:
    rng = random.Random(7)
    inj = encode(M.B3_SINGLE_DEBUG_PARENT, rng)
    trace, span, flag, parent = inj.headers["b3"].split("-")
    assert (trace, span, flag) == (inj.trace_id, inj.span_id, "d") and HEX16.match(parent) and parent != span
    assert inj.flag == "d"
    assert encode(M.B3_SINGLE_DEBUG, rng).headers["b3"].endswith("-d")
    assert encode(M.B3_SINGLE_DENY, rng).headers == {"b3": "0"}
    assert encode(M.B3_SINGLE_DEBUG_ONLY, rng).headers == {"b3": "d"}


def test_w3c_variants() -> None:
    rng = random.Random(8)
    inj = encode(M.W3C_SAMPLED_TRACESTATE, rng)
    version, trace, span, flags = inj.headers["traceparent"].split("-")
    assert (version, flags) == ("00", "01") and (trace, span) == (inj.trace_id, inj.span_id)
    assert HEX32.match(trace) and HEX16.match(span) and inj.headers["tracestate"] and inj.flag == "1"
    assert encode(M.W3C_NOT_SAMPLED, rng).headers["traceparent"].endswith("-00")
    both = encode(M.W3C_SAMPLED_B3_NOT_SAMPLED, rng)
    # B3 wins when both are sent: the injection follows the B3 ids, the traceparent has others.
    assert both.trace_id == both.headers["X-B3-TraceId"] and both.trace_id not in both.headers["traceparent"]
    assert both.flag == "0"


def test_forcing_headers() -> None:
    rng = random.Random(9)
    assert encode(M.FORCE_TRACE, rng).headers == {"x-envoy-force-trace": "true"}
    client = encode(M.CLIENT_TRACE_ID, rng).headers
    assert list(client) == ["x-client-trace-id"] and UUID4.match(client["x-client-trace-id"])
    assert encode(M.CLIENT_TRACE_ID_NOT_SAMPLED, rng).headers["X-B3-Sampled"] == "0"


def test_every_mode_encodes_and_reads_back_from_an_unchanged_echo() -> None:
    rng = random.Random(10)
    for mode in HeaderMode:
        inj = encode(mode, rng, EncodeOptions(crafted_percent=50.0))
        view = parse_echo(inj.headers)
        if inj.trace_id is not None:
            assert view.trace_id == inj.trace_id.lower(), mode
        assert view.request_id == inj.request_id, mode
        if inj.flag is not None:
            assert view.sampled is (inj.flag in ("1", "d")), mode


# --- k6-style trace ids --------------------------------------------------------------------------


def test_k6_trace_id_layout() -> None:
    # Go's PutVarint zig-zags: 0o756 = 494 -> 988 -> LEB128 dc 07; 33 -> 66 -> 42; 300 ns -> 600 ->
    # d8 04. Then random bytes up to 16.
    tid = k6_trace_id(random.Random(1), 300)
    assert tid.startswith("dc0742d804") and len(tid) == 32
    assert k6_trace_time_ns(tid) == 300
    now = 1_764_200_000_123_456_789  # 2025-11-27: 9 varint bytes of time, 4 random bytes
    tid = k6_trace_id(random.Random(2), now)
    assert tid.startswith("dc0742") and k6_trace_time_ns(tid) == now
    assert k6_trace_id(random.Random(3), now)[:24] == tid[:24] and k6_trace_id(random.Random(3), now) != tid
    assert k6_trace_time_ns("0" * 32) is None and k6_trace_time_ns("not hex") is None


def test_k6_style_applies_to_128_bit_trace_ids() -> None:
    options = EncodeOptions(id_style=IdStyle.K6, clock_ns=lambda: 1_764_200_000_000_000_000)
    rng = random.Random(11)
    for mode in (M.B3_MULTI_SAMPLED, M.B3_SINGLE_NO_FLAG, M.W3C_SAMPLED):
        tid = encode(mode, rng, options).trace_id
        assert tid is not None and k6_trace_time_ns(tid) == 1_764_200_000_000_000_000, mode
    tid64 = encode(M.B3_MULTI_SAMPLED_64, rng, options).trace_id
    assert tid64 is not None and HEX16.match(tid64)  # k6 has no 64-bit form: random
    assert k6_trace_time_ns(str(encode(M.B3_MULTI_SAMPLED, rng).trace_id)) is None  # default: random


# --- parse_echo with W3C ---------------------------------------------------------------------------


def test_parse_traceparent() -> None:
    t, s = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    assert parse_traceparent(f"00-{t}-{s}-01") == (t, s, "1")
    assert parse_traceparent(f"00-{t}-{s}-00") == (t, s, "0")
    assert parse_traceparent(f"00-{t}-{s}-03") == (t, s, "1")  # bit 0 is "sampled"
    assert parse_traceparent(f"00-{t[:-1]}-{s}-01") is None and parse_traceparent("garbage") is None
    view = parse_echo({"Traceparent": f"00-{t}-{s}-01", "X-Request-Id": "r"})
    assert (view.trace_id, view.span_id, view.flag, view.sampled) == (t, s, "1", True)
    # B3 present (Envoy always adds it): B3 is what the upstream's tracer uses.
    view = parse_echo({"traceparent": f"00-{t}-{s}-01", "x-b3-traceid": "a" * 32, "x-b3-sampled": "0"})
    assert (view.trace_id, view.sampled) == ("a" * 32, False)


# --- reconciliation with the config-aware expectations --------------------------------------------

T1, T2 = "5eed0000000000010000000000000001", "5eed0000000000020000000000000002"
XR = "000003e7-0123-4567-89ab-cdef01234567"  # head 999: sampled at 10 % (threshold 1000)
XR_NOT = "000003e8-0123-4567-89ab-cdef01234567"  # head 1000: not sampled at 10 %


def rec(rid: str, mode: HeaderMode, **fields: Any) -> dict[str, Any]:
    return {"rid": rid, "mode": mode.value, "status": 200, "ts": 1.0, "latency_ms": 1.0, **fields}


def expectation(ctx: ExpectationContext) -> Expectation:
    return Expectation(2, ("gw",), 10.0, ctx)


def test_crafted_predictions_come_from_the_sent_id_when_kept() -> None:
    ledger = [
        # kept: echoed = sent with char 14 rewritten -> predicted from the sent id
        rec("a", M.XRID_CRAFTED, xrid_sent=XR, predicted=True, up_xrid=XR[:14] + "9" + XR[15:], up_flag="1"),
        rec("b", M.XRID_CRAFTED, xrid_sent=XR_NOT, predicted=False, up_xrid=XR_NOT, up_flag="0"),
        # kept but the decision contradicts the id: a mismatch
        rec("c", M.XRID_CRAFTED, xrid_sent=XR_NOT, predicted=False, up_xrid=XR_NOT, up_flag="1"),
    ]
    out = reconcile_mesh(ledger, {}, expectation(KEEP))
    assert out["sampling"]["prediction"] == {
        "checked": 3, "mismatches": 1, "examples": ["c"], "mode": "crafted",
        "by_source": {"crafted": 3, "echoed": 0}, "sent_id_replaced": 0,
        "by_mode": {"xrid_crafted": {"checked": 3, "mismatches": 1}},
    }  # fmt: skip
    assert out["modes"]["xrid_crafted"]["expectation_violations"] == 0


def test_replaced_ids_are_predicted_from_the_echo_and_counted() -> None:
    ledger = [
        rec("a", M.XRID_CRAFTED, xrid_sent=XR, predicted=True, up_xrid=XR_NOT, up_flag="0"),
        rec("b", M.NONE, up_xrid=XR, up_flag="1"),
    ]
    out = reconcile_mesh(ledger, {}, expectation(ISTIO))
    prediction = out["sampling"]["prediction"]
    assert (prediction["mode"], prediction["by_source"], prediction["sent_id_replaced"]) == (
        "echoed",
        {"crafted": 0, "echoed": 2},
        1,
    )
    assert prediction["mismatches"] == 0  # "a" was decided on the echoed id (head 1000: not sampled)
    # The same ledger read as if the gateway kept ids: "a" breaks the request-id expectation.
    out = reconcile_mesh(ledger, {}, expectation(KEEP))
    assert out["modes"]["xrid_crafted"]["violations"]["request_id"] == 1


def test_no_prediction_without_a_percent_or_ids() -> None:
    out = reconcile_mesh([rec("a", M.B3_MULTI_SAMPLED, up_flag="1")], {}, expectation(ISTIO))
    assert out["sampling"]["prediction"]["mode"] == "none"


def test_violations_by_kind() -> None:
    found = TraceObservation(FetchStatus.FOUND, 2, ("gw",))
    ledger = [
        # b3 d must be sampled: the upstream saw 0 -> decision
        rec("d", M.B3_SINGLE_DEBUG, inj_trace=T1, up_trace=T1, up_flag="0"),
        # traceparent 00 under W3C must never produce spans: found -> leak
        rec("w", M.W3C_NOT_SAMPLED, inj_trace=T2, up_trace=T2, up_flag="0"),
    ]
    out = reconcile_mesh(ledger, {T2: found}, expectation(W3C))
    assert out["modes"]["b3_single_debug"]["violations"] == {
        "decision": 1,
        "trace_id": 0,
        "request_id": 0,
        "leak": 0,
    }
    assert out["modes"]["w3c_not_sampled"]["violations"] == {
        "decision": 0,
        "trace_id": 0,
        "request_id": 0,
        "leak": 1,
    }
    assert out["modes"]["w3c_not_sampled"]["expected_decision"] == "forced_not_sampled"
    # Under USE_B3 the same traceparent is ignored: Envoy decides, a new trace id is expected,
    # so keeping ours is the violation and found spans are no leak.
    out = reconcile_mesh(ledger[1:], {T2: found}, expectation(ISTIO))
    assert out["modes"]["w3c_not_sampled"]["expected_decision"] == "proxy"
    assert out["modes"]["w3c_not_sampled"]["violations"] == {
        "decision": 0,
        "trace_id": 1,
        "request_id": 0,
        "leak": 0,
    }


def test_never_traced_modes_count_leaks_whatever_the_upstream_saw() -> None:
    t = "5eed0000000000030000000000000003"
    ledger = [rec("n", M.XRID_NON_UUID, xrid_sent="loadgen-x", up_xrid="loadgen-x", up_trace=t, up_flag="0")]
    out = reconcile_mesh(ledger, {t: TraceObservation(FetchStatus.FOUND, 3, ("gw",))}, expectation(KEEP))
    m = out["modes"]["xrid_non_uuid"]
    assert m["expected_decision"] == "never_traced" and m["violations"]["leak"] == 1 and m["leaked"] == 1
    assert out["sampling"]["decision"]["n"] == 0  # not a random-sampling decision


def test_unparsable_trace_ids_are_never_looked_up() -> None:
    assert ledger_trace_id({"up_trace": "not-a-trace-1234", "inj_trace": "not-a-trace-1234"}) is None
    assert ledger_trace_id({"up_trace": None, "inj_trace": "AB" * 8}) == "ab" * 8
    assert ledger_trace_id({"up_trace": "0" * 16 + "ab" * 8}) == "ab" * 8


def test_propagation_counts_only_modes_whose_trace_id_should_survive() -> None:
    ledger = [
        rec("w", M.W3C_SAMPLED, inj_trace=T1, up_trace=T2, up_flag="1"),  # USE_B3: a new id, fine
        rec("b", M.B3_MULTI_NO_FLAG, inj_trace=T2, up_trace=T2, up_flag="0"),
    ]
    assert reconcile_mesh(ledger, {}, expectation(ISTIO))["propagation"]["n"] == 1
    assert reconcile_mesh(ledger, {}, expectation(W3C))["propagation"]["n"] == 2


def test_default_context_follows_the_configured_percent() -> None:
    assert Expectation(2, (), 12.5).mode_context() == ExpectationContext(sampling_percent=12.5)
    assert expectation(KEEP).mode_context() is KEEP


# --- overall_sampling below 100 (measured on Envoy 1.40: docs/header-modes.md "overall_sampling",
# tests/integration/test_mesh_knobs.py) ------------------------------------------------------------

U = Decision.UNPREDICTABLE
EDGE50 = ExpectationContext(sampling_percent=100.0, overall_sampling_percent=50.0)
INTERNAL_R30_O60 = ExpectationContext(
    sampling_percent=30.0, client_internal=True, overall_sampling_percent=60.0
)
KEEP_R60_O30 = ExpectationContext(
    sampling_percent=60.0, preserve_external_request_id=True, overall_sampling_percent=30.0
)
EDGE0 = ExpectationContext(sampling_percent=100.0, overall_sampling_percent=0.0)
OVERALL_CONTEXTS = (EDGE50, INTERNAL_R30_O60, KEEP_R60_O30, EDGE0)
# mode: (decision, proxy_percent, predictable before sending) at EDGE50, INTERNAL_R30_O60,
# KEEP_R60_O30, EDGE0. Random sampling: min(random, overall); a forced decision on a kept
# client id: overall; on Envoy's own id: a coin the client cannot see; client flags: untouched.
OVERALL_TABLE: dict[HeaderMode, tuple[tuple[Decision, float | None, bool], ...]] = {
    M.NONE: ((P, 50.0, False), (P, 30.0, False), (P, 30.0, False), (P, 0.0, False)),
    M.B3_MULTI_NO_FLAG: ((P, 50.0, False), (P, 30.0, False), (P, 30.0, False), (P, 0.0, False)),
    M.CLIENT_TRACE_ID: ((U, None, False), (U, None, False), (U, None, False), (N, None, False)),
    M.FORCE_TRACE: ((P, 50.0, False), (U, None, False), (P, 30.0, False), (P, 0.0, False)),
    M.XRID_RANDOM: ((P, 50.0, False), (P, 30.0, True), (P, 30.0, True), (P, 0.0, False)),
    M.XRID_FORCED: ((P, 50.0, False), (P, 60.0, True), (P, 30.0, True), (P, 0.0, False)),
    M.XRID_NON_UUID: ((P, 50.0, False), (N, None, False), (N, None, False), (P, 0.0, False)),
    M.B3_MULTI_SAMPLED: ((S, None, False),) * 4,
    M.B3_SINGLE_DEBUG_ONLY: ((S, None, False),) * 4,
    M.B3_SAMPLED_ONLY: ((S, None, False),) * 4,
    M.B3_MULTI_NOT_SAMPLED: ((Z, None, False),) * 4,
    M.CLIENT_TRACE_ID_NOT_SAMPLED: ((Z, None, False),) * 4,
}


@pytest.mark.parametrize("mode", list(OVERALL_TABLE))
def test_overall_sampling_expectations(mode: HeaderMode) -> None:
    for ctx, (decision, percent, predictable) in zip(OVERALL_CONTEXTS, OVERALL_TABLE[mode], strict=True):
        exp = MODE_SPECS[mode].expected(ctx)
        got = (exp.decision, exp.proxy_percent, exp.predictable_before_send)
        assert got == (decision, percent, predictable), (mode, ctx)


def test_overall_sampling_what_the_upstream_and_collector_see() -> None:
    vetoed_coin = MODE_SPECS[M.CLIENT_TRACE_ID].expected(EDGE50)
    assert vetoed_coin.upstream_sampled is None and vetoed_coin.spans is None
    assert "overall_sampling 50" in vetoed_coin.reason
    never = MODE_SPECS[M.CLIENT_TRACE_ID].expected(EDGE0)
    assert never.upstream_sampled is False and never.spans is False
    internal_force = MODE_SPECS[M.FORCE_TRACE].expected(replace(EDGE0, client_internal=True))
    assert internal_force.decision is N and internal_force.spans is False
    # A client flag is untouched even at overall 0.
    assert MODE_SPECS[M.B3_SINGLE_DEBUG].expected(EDGE0).spans is True
    assert MODE_SPECS[M.B3_MULTI_SAMPLED].expected(EDGE0).upstream_sampled is True


def test_overall_sampling_thresholds_truncate_like_envoy() -> None:
    # int(10000 * (0.004 / 100)) == 0: nothing passes; int(10000 * 0.99999) == 9999: not all.
    assert (
        MODE_SPECS[M.CLIENT_TRACE_ID].expected(replace(EDGE50, overall_sampling_percent=0.004)).decision is N
    )
    assert (
        MODE_SPECS[M.CLIENT_TRACE_ID].expected(replace(EDGE50, overall_sampling_percent=99.999)).decision is U
    )
    assert (
        MODE_SPECS[M.CLIENT_TRACE_ID].expected(replace(EDGE50, overall_sampling_percent=100.0)).decision is S
    )


def test_overall_sampling_with_unknown_random_sampling_and_client_sampling() -> None:
    unknown = ExpectationContext(overall_sampling_percent=50.0)
    none = MODE_SPECS[M.NONE].expected(unknown)
    assert none.decision is P and none.proxy_percent is None  # min(unknown, 50) is unknown
    coin = ExpectationContext(
        sampling_percent=10.0, client_sampling_percent=50.0, overall_sampling_percent=50.0
    )
    assert MODE_SPECS[M.CLIENT_TRACE_ID].expected(coin).decision is U


def test_at_overall_100_proxy_decides_at_random_sampling() -> None:
    ctx = ExpectationContext(sampling_percent=12.5)
    assert ctx.overall_sampling_percent == 100.0  # Istio's value is the default
    assert MODE_SPECS[M.NONE].expected(ctx).proxy_percent == 12.5
    assert MODE_SPECS[M.CLIENT_TRACE_ID].expected(ctx).decision is S
    assert MODE_SPECS[M.XRID_FORCED].expected(replace(ctx, client_internal=True)).decision is S
    assert "overall" not in MODE_SPECS[M.NONE].expected(ctx).reason


def test_tracing_config_passes_overall_sampling_through() -> None:
    assert TracingConfig(overall_sampling_percent=25.0).expectation_context().overall_sampling_percent == 25.0
    assert TracingConfig().expectation_context().overall_sampling_percent == 100.0
