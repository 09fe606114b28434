"""loadgen.analysis.reconcile on hand-built ledgers and observations.

Every expected count below is derived in the comments from the records themselves (which outcome
each one must get and why), not copied from a run of the code."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sp_stats

from loadgen.analysis.reconcile import (
    Expectation,
    Outcome,
    TraceObservation,
    classify,
    ledger_trace_id,
    reconcile_mesh,
    reconcile_reference,
    top_errors,
    upstream_decision,
)
from loadgen.analysis.stats import wilson_interval
from loadgen.backends.base import Fetched, FetchStatus
from loadgen.mesh.modes import HeaderMode

EXPECT = Expectation(spans_per_trace=2, services=("gateway", "app"), configured_percent=10.0)

FOUND2 = TraceObservation(FetchStatus.FOUND, 2, ("app", "gateway"), run_tagged=2)
FOUND1 = TraceObservation(FetchStatus.FOUND, 1, ("gateway",), run_tagged=1)
MISSING = TraceObservation(FetchStatus.MISSING)
ERROR = TraceObservation(FetchStatus.ERROR, error="HTTP 503")


def tid(i: int) -> str:
    return f"{0x5EED000000000000 + i:016x}{i:016x}"  # 128-bit with a non-zero high half


def xrid(head: int, reason: str) -> str:
    return f"{head:08x}-1c2d-{reason}e3f-8a4b-0123456789ab"


def rec(rid: str, mode: HeaderMode | str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"rid": rid, "mode": str(mode), "status": 200, "ts": 1000.0, "latency_ms": 10.0}
    base.update(fields)
    return base


def prop(k: int, n: int) -> dict[str, Any]:
    """The Proportion dict the summary must carry, computed here from Wilson's definition."""
    low, high = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": (k / n) if n else None, "ci95": [low, high]}


# --- classify ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decided", "obs", "expected"),
    [
        (True, FOUND2, Outcome.FOUND),
        (True, TraceObservation(FetchStatus.FOUND, 5, ("app", "gateway", "x")), Outcome.FOUND),
        (True, FOUND1, Outcome.PARTIAL),  # too few spans
        (True, TraceObservation(FetchStatus.FOUND, 2, ("gateway",)), Outcome.PARTIAL),  # a service missing
        (True, MISSING, Outcome.MISSING),
        (True, TraceObservation(FetchStatus.FOUND, 0), Outcome.MISSING),  # "found" with no span
        (False, FOUND1, Outcome.LEAKED),
        (False, MISSING, Outcome.NOT_SAMPLED),
        (None, FOUND2, Outcome.UNKNOWN),
        (None, MISSING, Outcome.UNKNOWN),
    ],
)
def test_classify(decided: bool | None, obs: TraceObservation, expected: Outcome) -> None:
    assert classify(decided, obs, EXPECT) is expected


@pytest.mark.parametrize("decided", [True, False, None])
@pytest.mark.parametrize("obs", [None, ERROR, TraceObservation(FetchStatus.ERROR, 3, ("app",))])
def test_error_or_never_queried_is_unknown_never_missing(
    decided: bool | None, obs: TraceObservation | None
) -> None:
    assert classify(decided, obs, EXPECT) is Outcome.UNKNOWN


# --- TraceObservation ----------------------------------------------------------------------------


def test_observation_from_fetched_counts_services_and_run_tags() -> None:
    spans = (
        {"traceId": "t", "id": "1", "localEndpoint": {"serviceName": "gateway"}, "tags": {"run": "r1"}},
        {"traceId": "t", "id": "2", "localEndpoint": {"serviceName": "app"}, "tags": {"run": "r2"}},
        {"traceId": "t", "id": "3", "localEndpoint": {"serviceName": "gateway"}, "tags": {"run": "r1"}},
        {"traceId": "t", "id": "4", "localEndpoint": {}},
        {"traceId": "t", "id": "5", "tags": {"other": "r1"}},
        {"traceId": "t", "id": "6", "localEndpoint": None, "tags": None},
    )
    obs = TraceObservation.from_fetched(Fetched(FetchStatus.FOUND, spans), run_id_tag="run", run_id="r1")
    assert replace(obs, shape=None) == TraceObservation(FetchStatus.FOUND, 6, ("app", "gateway"), 2, None)
    assert obs.shape is not None and obs.shape.spans_of("gateway") == 2  # the tree: test_integrity.py
    # without a run id nothing counts as tagged
    assert TraceObservation.from_fetched(Fetched(FetchStatus.FOUND, spans)).run_tagged == 0
    err = TraceObservation.from_fetched(Fetched(FetchStatus.ERROR, error="timeout"))
    assert err == TraceObservation(FetchStatus.ERROR, 0, (), 0, "timeout")


observations = st.builds(
    TraceObservation,
    status=st.sampled_from(list(FetchStatus)),
    span_count=st.integers(0, 10_000),
    services=st.lists(st.text(min_size=1, max_size=12), max_size=5).map(tuple),
    run_tagged=st.integers(0, 10_000),
    error=st.none() | st.text(max_size=30),
)


@given(observations)
def test_observation_dict_round_trip(obs: TraceObservation) -> None:
    d = obs.to_dict()
    assert d["status"] == obs.status.value and d["spans"] == obs.span_count
    assert TraceObservation.from_dict(d) == obs


# --- helpers on ledger records -------------------------------------------------------------------


def test_ledger_trace_id_prefers_what_the_upstream_saw_and_normalizes() -> None:
    assert (
        ledger_trace_id({"up_trace": "0" * 16 + "ABCDEF0123456789", "inj_trace": "x"}) == "abcdef0123456789"
    )
    assert ledger_trace_id({"inj_trace": tid(5).upper()}) == tid(5)
    assert ledger_trace_id({"up_trace": None, "inj_trace": None}) is None


def test_upstream_decision_only_for_answered_requests() -> None:
    assert upstream_decision({"status": 200, "up_flag": "1"}) is True
    assert upstream_decision({"status": 200, "up_flag": "0", "up_xrid": xrid(1, "9")}) is False
    assert upstream_decision({"status": 200, "up_xrid": xrid(1, "9")}) is True
    assert upstream_decision({"status": 200}) is None
    assert upstream_decision({"status": 503, "up_flag": "1"}) is None
    assert upstream_decision({"status": 0}) is None


# --- reconcile_mesh: one ledger with every outcome -------------------------------------------------

NONE = HeaderMode.NONE
# The upstream-seen trace ids of the no-header requests (Envoy started these traces).
T = {i: tid(100 + i) for i in range(1, 10)}
# Injected ids.
I = {i: tid(200 + i) for i in range(10, 16)}  # noqa: E741
I12_64 = "00000000c0ffee12"  # a 64-bit id injected, echoed zero-padded to 128 bits

LEDGER: list[dict[str, Any]] = [
    # NONE: Envoy decides. configured 10 % -> sampled iff head % 10000 < 1000.
    # r1: decision only from x-request-id char 14 ('9'); head 500 -> predicted sampled. complete.
    rec("r1", NONE, up_trace=T[1], up_xrid=xrid(500, "9"), ts=1000.0, latency_ms=4.0),
    # r2: sampled, one of two spans -> partial.
    rec("r2", NONE, up_trace=T[2], up_flag="1", up_xrid=xrid(700, "9"), ts=1001.0, latency_ms=8.0),
    # r3: sampled (head 10007 % 10000 = 7 -> predicted sampled), backend answered: none -> missing.
    rec("r3", NONE, up_trace=T[3], up_flag="1", up_xrid=xrid(10_007, "9"), ts=1002.0, latency_ms=6.0),
    # r4: not sampled (head 5000) but spans exist -> leaked.
    rec("r4", NONE, up_trace=T[4], up_flag="0", up_xrid=xrid(5000, "4"), ts=1003.0, latency_ms=2.0),
    # r5: not sampled and absent -> not_sampled.
    rec("r5", NONE, up_trace=T[5], up_flag="0", up_xrid=xrid(6000, "4"), ts=1004.0, latency_ms=12.0),
    # r6: sampled, the backend query failed -> unknown (NOT missing).
    rec("r6", NONE, up_trace=T[6], up_flag="1", up_xrid=xrid(800, "9"), ts=1005.0, latency_ms=20.0),
    # r7: sampled, never queried (no observation at all) -> unknown.
    rec("r7", NONE, up_trace=T[7], up_flag="1", up_xrid=xrid(900, "9"), ts=1006.0, latency_ms=1.0),
    # r8: gateway error: no decision known, not a latency sample; the last request to finish.
    rec("r8", NONE, status=503, error="503", ts=1009.0, latency_ms=2500.0),
    # r9: head 9000 -> Envoy's rule predicts NOT sampled, yet the upstream saw sampled: a mismatch.
    rec("r9", NONE, up_trace=T[9], up_flag="1", up_xrid=xrid(9000, "9"), ts=1007.0, latency_ms=3.0),
    # Forced modes: not part of the decision rate.
    rec("r10", HeaderMode.B3_MULTI_SAMPLED, inj_trace=I[10], inj_flag="1", up_trace=I[10], up_flag="1",
        ts=999.5, latency_ms=5.0),
    # r11: told "not sampled" but the upstream saw sampled -> an expectation violation (still found).
    rec("r11", HeaderMode.B3_MULTI_NOT_SAMPLED, inj_trace=I[11], inj_flag="0", up_trace=I[11], up_flag="1",
        latency_ms=7.0),
    # r12: 64-bit injected, echoed zero-padded: the same trace after normalisation.
    rec("r12", HeaderMode.B3_SINGLE_SAMPLED, inj_trace=I12_64, inj_flag="1", up_trace="0" * 16 + I12_64,
        up_flag="1", latency_ms=9.0),
    # r13: ids injected, no flag (Envoy decides: not sampled) but the upstream saw ANOTHER trace id.
    rec("r13", HeaderMode.B3_MULTI_NO_FLAG, inj_trace=I[13], up_trace=T[8], up_flag="0",
        up_xrid=xrid(5555, "4"), latency_ms=11.0),
    # r14: ids injected, no flag, Envoy sampled (head 100), id kept, complete.
    rec("r14", HeaderMode.B3_SINGLE_NO_FLAG, inj_trace=I[14], up_trace=I[14], up_flag="1",
        up_xrid=xrid(100, "9"), latency_ms=13.0),
    # r15: forced sampled, id kept, backend answered without it -> missing.
    rec("r15", HeaderMode.B3_MULTI_SAMPLED, inj_trace=I[15], inj_flag="1", up_trace=I[15], up_flag="1",
        latency_ms=15.0),
]  # fmt: skip

OBS: dict[str, TraceObservation] = {
    T[1]: TraceObservation(FetchStatus.FOUND, 2, ("app", "gateway"), run_tagged=2),
    T[2]: TraceObservation(FetchStatus.FOUND, 1, ("gateway",), run_tagged=0),
    T[3]: MISSING,
    T[4]: TraceObservation(FetchStatus.FOUND, 2, ("app", "gateway"), run_tagged=2),
    T[5]: MISSING,
    T[6]: ERROR,
    T[8]: MISSING,
    T[9]: TraceObservation(FetchStatus.FOUND, 2, ("app", "gateway"), run_tagged=1),
    I[10]: TraceObservation(FetchStatus.FOUND, 3, ("app", "gateway"), run_tagged=3),
    I[11]: TraceObservation(FetchStatus.FOUND, 2, ("app", "gateway"), run_tagged=2),
    I12_64: TraceObservation(FetchStatus.FOUND, 2, ("app", "gateway"), run_tagged=2),
    I[13]: TraceObservation(FetchStatus.FOUND, 2, ("app", "gateway")),  # under the injected id: unused
    I[14]: TraceObservation(FetchStatus.FOUND, 2, ("app", "gateway"), run_tagged=2),
    I[15]: MISSING,
}


@pytest.fixture(scope="module")
def mesh() -> dict[str, Any]:
    return reconcile_mesh(LEDGER, OBS, EXPECT)


def test_mesh_per_mode_outcomes(mesh: dict[str, Any]) -> None:
    modes = mesh["modes"]
    assert list(modes) == sorted(str(m) for m in {r["mode"] for r in LEDGER})
    none = modes["none"]
    assert none["requests"] == 9 and none["errors"] == 1
    # decided: r1 r2 r3 r6 r7 r9 sampled; r4 r5 not; r8 unknown
    assert (none["decided_sampled"], none["decided_not_sampled"]) == (6, 2)
    outcomes = {o.value: none[o.value] for o in Outcome}
    assert outcomes == {
        "found": 2,
        "partial": 1,
        "missing": 1,
        "leaked": 1,
        "not_sampled": 1,
        "unknown": 3,
        "not_queried": 0,
    }
    assert none["expected_decision"] == "proxy"
    # `none` sends nothing: Envoy decides, no id of ours to keep -> nothing definite to check.
    assert none["expectation_definite"] is False and none["expectation_checked"] == 0
    # r10 and r15: forced sampled with injected ids; both answered with a decision and their trace
    # id, so both were checked (and kept every expectation).
    assert modes["b3_multi_sampled"] == {
        "requests": 2, "errors": 0, "decided_sampled": 2, "decided_not_sampled": 0,
        "found": 1, "partial": 0, "missing": 1, "leaked": 0, "not_sampled": 0, "unknown": 0, "not_queried": 0,
        "expected_decision": "forced_sampled", "expected_trace_id_kept": True,
        "expectation_definite": True, "expectation_checked": 2, "expectation_violations": 0,
        "violations": {"decision": 0, "trace_id": 0, "request_id": 0, "leak": 0},
    }  # fmt: skip
    # r13: Envoy decides, but the injected B3 id must survive: definite, and checked once.
    assert modes["b3_multi_no_flag"]["expectation_definite"] is True
    assert modes["b3_multi_no_flag"]["expectation_checked"] == 1
    # r11 breaks two expectations (the upstream saw sampled; spans exist) but is one request.
    assert modes["b3_multi_not_sampled"]["expectation_violations"] == 1
    want = {"decision": 1, "trace_id": 0, "request_id": 0, "leak": 1}
    assert modes["b3_multi_not_sampled"]["violations"] == want
    # r13: B3 ids must survive, yet the upstream saw another trace id.
    assert modes["b3_multi_no_flag"]["expectation_violations"] == 1
    assert modes["b3_multi_no_flag"]["violations"]["trace_id"] == 1
    assert modes["b3_multi_not_sampled"]["found"] == 1
    assert modes["b3_multi_no_flag"]["not_sampled"] == 1
    assert modes["b3_single_no_flag"]["found"] == 1
    assert modes["b3_single_sampled"]["found"] == 1
    # every request gets exactly one outcome
    for m in modes.values():
        assert sum(m[o.value] for o in Outcome) == m["requests"]


def test_mesh_decision_rate_counts_only_proxy_decided_modes(mesh: dict[str, Any]) -> None:
    # PROXY modes with a known decision: r1 r2 r3 r4 r5 r6 r7 r9 (none), r13, r14 -> n = 10;
    # sampled among them: r1 r2 r3 r6 r7 r9 r14 -> k = 7. Forced r10 r11 r12 r15 excluded.
    sampling = mesh["sampling"]
    assert sampling["configured_percent"] == 10.0
    assert sampling["decision"] == prop(7, 10)
    ref = sp_stats.binomtest(7, 10, 0.10)
    assert sampling["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    # 7/10 vs 10 %: outside the Wilson interval, p < 0.001 -> fail (and r9 contradicts Envoy's
    # rule, so any verdict built on the prediction fails too)
    assert ref.proportion_ci(method="wilson").low > 0.10 and ref.pvalue < 0.001
    assert sampling["verdict"] == "fail"


def flag_only(i: int, sampled: bool) -> dict[str, Any]:
    """A no-header request whose echo carries the flag but no x-request-id (nothing to predict)."""
    return rec(f"s{i}", NONE, up_trace=tid(300 + i), up_flag="1" if sampled else "0")


@pytest.mark.parametrize(
    ("k", "n", "percent"),
    [(7, 10, 10.0), (1, 10, 10.0), (0, 10, 10.0), (30, 200, 10.0), (45, 200, 10.0), (3, 40, 1.0)],
)
def test_mesh_statistical_sampling_verdict(k: int, n: int, percent: float) -> None:
    ledger = [flag_only(i, i < k) for i in range(n)]
    out = reconcile_mesh(ledger, {}, Expectation(2, ("gateway", "app"), percent))
    sampling = out["sampling"]
    assert sampling["prediction"]["checked"] == 0
    assert sampling["decision"] == prop(k, n)
    ref = sp_stats.binomtest(k, n, percent / 100)
    ci = ref.proportion_ci(method="wilson")
    want = "pass" if ci.low <= percent / 100 <= ci.high else "fail" if ref.pvalue < 0.001 else "inconclusive"
    assert sampling["verdict"] == want
    assert sampling["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_mesh_prediction_mismatches_follow_the_x_request_id_rule(mesh: dict[str, Any]) -> None:
    # checked: PROXY requests with a decision and a parsable x-request-id: the same 10.
    # Only r9 (head 9000 >= 1000, but sampled) disagrees.
    # No request sent an x-request-id: every prediction came from the echoed one.
    # Per mode: none has r1-r7 minus r8 (error) plus r9 = 8 checked, r9 the mismatch; r13 (head
    # 5555, not sampled) and r14 (head 100, sampled) agree with the rule.
    assert mesh["sampling"]["prediction"] == {
        "checked": 10, "mismatches": 1, "examples": ["r9"],
        "mode": "echoed", "by_source": {"crafted": 0, "echoed": 10}, "sent_id_replaced": 0,
        "by_mode": {
            "b3_multi_no_flag": {"checked": 1, "mismatches": 0},
            "b3_single_no_flag": {"checked": 1, "mismatches": 0},
            "none": {"checked": 8, "mismatches": 1},
        },
    }  # fmt: skip


def test_mesh_collection_leaks_and_examples(mesh: dict[str, Any]) -> None:
    m = mesh["mesh"]
    # decided sampled and answered: r1 F, r2 P, r3 M, r9 F, r10 F, r11 F, r12 F, r14 F, r15 M
    assert m["collection"] == prop(6, 9)
    assert m["partial"] == 1
    assert m["unknown"] == 2  # r6 (error) and r7 (never queried): sampled but unknown
    assert m["leaked"] == 1 and m["leaked_examples"] == [T[4]]
    # decided NOT sampled and queried: r4 (leaked), r5 and r13 (absent: not_sampled). r11 was
    # told "not sampled" but the upstream saw sampled, so it is not among them.
    assert m["leak_checked"] == 3
    assert m["missing_examples"] == [T[3], I[15]]
    # found/partial span counts: r1 2, r2 1, r9 2, r10 3, r11 2, r12 2, r14 2
    assert m["spans_per_found_trace"] == {"1": 1, "2": 5, "3": 1}
    assert m["run_tag"] == {"k": 2 + 0 + 1 + 3 + 2 + 2 + 2, "n": 2 + 1 + 2 + 3 + 2 + 2 + 2}
    assert m["expected_spans_per_trace"] == 2 and m["expected_services"] == ["gateway", "app"]
    # an error or unqueried trace never shows up as missing
    assert T[6] not in m["missing_examples"] and T[7] not in m["missing_examples"]


def test_mesh_propagation(mesh: dict[str, Any]) -> None:
    p = mesh["propagation"]
    # injected and answered: r10..r15 (6); kept: all but r13 (5)
    assert {k: p[k] for k in ("k", "n", "rate", "ci95")} == prop(5, 6)
    # decided sampled and answered among those: r10 F, r11 F, r12 F, r14 F, r15 M -> 4 of 5
    assert p["backend"] == prop(4, 5)


def test_mesh_requests_and_latency(mesh: dict[str, Any]) -> None:
    assert mesh["requests"]["total"] == len(LEDGER)
    assert mesh["requests"]["errors"] == 1
    assert mesh["requests"]["first_ts"] == 999.5
    assert mesh["requests"]["last_ts"] == pytest.approx(1009.0 + 2.5)  # r8 ends last
    for mode, lat in mesh["latency_ms"].items():
        values = [r["latency_ms"] for r in LEDGER if r["mode"] == mode and r["status"] == 200]
        assert lat["n"] == len(values)
        for q in (50, 95, 99):
            assert lat[f"p{q}"] == pytest.approx(float(np.percentile(values, q))), (mode, q)
    assert mesh["latency_ms"]["none"]["n"] == 8  # r8's 2500 ms error is not a latency sample
    assert max(r["latency_ms"] for r in LEDGER if r["mode"] == "none" and r["status"] == 200) < 2500


def test_failed_requests_are_broken_down_by_status_and_error_commonest_first() -> None:
    # 3 x 404, 2 x no response (connection refused), 1 x 503, 1 answered; a 200 is never an error
    refused = "ConnectionRefusedError(111, 'Connection refused')"
    ledger = [
        *(rec(f"a{i}", NONE, status=404, error="HTTP 404") for i in range(3)),
        *(rec(f"b{i}", NONE, status=0, error=refused) for i in range(2)),
        rec("c", NONE, status=503, error="HTTP 503"),
        rec("d", NONE, up_trace=tid(1), up_flag="1"),
    ]
    expected = [
        {"status": 404, "error": "HTTP 404", "count": 3},
        {"status": 0, "error": refused, "count": 2},
        {"status": 503, "error": "HTTP 503", "count": 1},
    ]
    out = reconcile_mesh(ledger, {}, EXPECT)
    assert out["requests"]["errors"] == 6 and out["requests"]["top_errors"] == expected
    assert top_errors(ledger) == expected  # the same, as a pure function of the records
    assert top_errors(ledger, limit=1) == expected[:1]
    # a missing status is "no response"; a long message is cut, not dropped
    assert top_errors([{"error": "x" * 500}]) == [{"status": 0, "error": "x" * 200, "count": 1}]


def test_mesh_without_a_configured_percent_has_no_verdict_and_no_prediction() -> None:
    out = reconcile_mesh(LEDGER, OBS, Expectation(2, ("gateway", "app"), None))
    assert out["sampling"]["verdict"] == "inconclusive" and out["sampling"]["p_value"] is None
    assert out["sampling"]["prediction"]["checked"] == 0
    assert out["sampling"]["decision"] == prop(7, 10)  # the rate is still measured


def test_forced_modes_only_give_no_decision_rate() -> None:
    ledger = [
        rec("a", HeaderMode.B3_MULTI_SAMPLED, inj_trace=I[10], up_trace=I[10], up_flag="1", up_xrid=xrid(1, "b")),
        rec("b", HeaderMode.B3_SINGLE_NOT_SAMPLED, inj_trace=I[11], up_trace=I[11], up_flag="0", up_xrid=xrid(1, "4")),
    ]  # fmt: skip
    out = reconcile_mesh(ledger, {I[10]: FOUND2, I[11]: MISSING}, EXPECT)
    assert out["sampling"]["decision"] == prop(0, 0)
    assert out["sampling"]["verdict"] == "inconclusive"
    assert out["sampling"]["p_value"] is None  # nothing tested
    assert out["sampling"]["prediction"]["checked"] == 0
    assert out["mesh"]["collection"] == prop(1, 1)
    assert all(m["expectation_violations"] == 0 for m in out["modes"].values())


def test_every_sampled_request_unknown_when_the_backend_fails() -> None:
    ledger = [rec(f"r{i}", NONE, up_trace=tid(i), up_flag="1", up_xrid=xrid(i, "9")) for i in range(1, 21)]
    obs = {tid(i): ERROR for i in range(1, 11)}  # 10 errors, 10 never queried
    out = reconcile_mesh(ledger, obs, EXPECT)
    assert out["modes"]["none"]["unknown"] == 20 and out["modes"]["none"]["missing"] == 0
    assert out["mesh"]["collection"]["n"] == 0 and out["mesh"]["unknown"] == 20
    assert out["mesh"]["missing_examples"] == []


def test_leak_checked_counts_only_decided_not_sampled_traces_that_were_queried() -> None:
    # 5 not-sampled requests: two answered absent, one found (a leak), one backend error and one
    # never queried (both unknown: not checked for leaks); plus a sampled one (not a leak check).
    ledger = [rec(f"r{i}", NONE, up_trace=tid(i), up_flag="0", up_xrid=xrid(6000 + i, "4")) for i in range(5)]
    ledger.append(rec("s", NONE, up_trace=tid(9), up_flag="1", up_xrid=xrid(5, "9")))
    obs = {tid(0): MISSING, tid(1): MISSING, tid(2): FOUND2, tid(3): ERROR, tid(9): FOUND2}
    m = reconcile_mesh(ledger, obs, EXPECT)["mesh"]
    assert (m["leaked"], m["leak_checked"]) == (1, 3)
    # the backend gone: every query an error -> nothing was checked, however many were sent
    gone = reconcile_mesh(ledger, dict.fromkeys(obs, ERROR), EXPECT)["mesh"]
    assert (gone["leaked"], gone["leak_checked"]) == (0, 0)


def test_expectations_are_checked_only_where_the_answer_shows_them() -> None:
    # Forced sampled with injected ids, but no echo: neither the decision nor the trace id the
    # upstream saw is known, and the trace was never queried -> definite, yet not checked.
    blind = rec("a", HeaderMode.B3_MULTI_SAMPLED, inj_trace=I[10], inj_flag="1")
    # Forced not sampled, no echo, but its trace was queried (absent): the "no spans" expectation
    # is checked through the backend alone.
    queried = rec("b", HeaderMode.B3_MULTI_NOT_SAMPLED, inj_trace=I[11], inj_flag="0")
    failed = rec("c", HeaderMode.B3_MULTI_SAMPLED, status=503, inj_trace=I[12], inj_flag="1")
    modes = reconcile_mesh([blind, queried, failed], {I[11]: MISSING}, EXPECT)["modes"]
    assert modes["b3_multi_sampled"]["expectation_definite"] is True
    assert modes["b3_multi_sampled"]["expectation_checked"] == 0  # a: blind, c: not answered
    assert modes["b3_multi_not_sampled"]["expectation_checked"] == 1


def test_unknown_mode_strings_are_tallied_but_not_judged() -> None:
    ledger = [rec("a", "w3c_traceparent", up_trace=T[1], up_flag="1", up_xrid=xrid(5000, "9"))]
    out = reconcile_mesh(ledger, {T[1]: FOUND2}, EXPECT)
    assert out["modes"]["w3c_traceparent"]["expected_decision"] is None
    assert out["modes"]["w3c_traceparent"]["found"] == 1
    assert out["sampling"]["decision"]["n"] == 0 and out["sampling"]["prediction"]["checked"] == 0


def test_empty_ledger() -> None:
    out = reconcile_mesh([], {}, EXPECT)
    assert out["requests"] == {"total": 0, "errors": 0, "first_ts": None, "last_ts": None, "top_errors": []}
    assert out["modes"] == {} and out["latency_ms"] == {}
    assert out["sampling"]["verdict"] == "inconclusive"


def test_example_limit() -> None:
    ledger = [
        rec(f"r{i}", NONE, up_trace=tid(i), up_flag="1", up_xrid=xrid(9000 + i, "9")) for i in range(1, 9)
    ]
    out = reconcile_mesh(ledger, {tid(i): MISSING for i in range(1, 9)}, EXPECT, example_limit=3)
    assert out["mesh"]["missing_examples"] == [tid(1), tid(2), tid(3)]
    assert out["sampling"]["prediction"] == {
        "checked": 8, "mismatches": 8, "examples": ["r1", "r2", "r3"],
        "mode": "echoed", "by_source": {"crafted": 0, "echoed": 8}, "sent_id_replaced": 0,
        "by_mode": {"none": {"checked": 8, "mismatches": 8}},
    }  # fmt: skip


# A property: whatever the ledger, an ERROR or absent observation never yields "missing", and the
# collection denominator is exactly the sampled requests whose trace the backend answered for.
ledger_rows = st.lists(
    st.tuples(
        st.sampled_from(list(HeaderMode)),
        st.sampled_from([200, 200, 200, 503, 0]),
        st.sampled_from(["1", "0", None]),
        st.sampled_from(["9", "4", "x"]),
        st.sampled_from(["found2", "found1", "missing", "error", "absent"]),
    ),
    max_size=40,
)


@given(ledger_rows)
def test_unknown_is_never_missing_property(
    rows: Iterable[tuple[HeaderMode, int, str | None, str, str]],
) -> None:
    ledger, obs = [], {}
    answered_sampled = 0
    for i, (mode, status, flag, reason, state) in enumerate(rows):
        trace = tid(10_000 + i)
        ledger.append(
            rec(f"r{i}", mode, status=status, up_trace=trace, up_flag=flag, up_xrid=xrid(i, reason))
        )
        if state != "absent":
            obs[trace] = {"found2": FOUND2, "found1": FOUND1, "missing": MISSING, "error": ERROR}[state]
        sampled = status == 200 and (flag == "1" or (flag is None and reason == "9"))
        answered_sampled += int(sampled and state not in ("error", "absent"))
        out_rows = reconcile_mesh(ledger[-1:], obs, EXPECT)
        outcome = next(o for o in Outcome if out_rows["modes"][str(mode)][o.value] == 1)
        if state in ("error", "absent"):
            assert outcome is Outcome.UNKNOWN
    out = reconcile_mesh(ledger, obs, EXPECT)
    assert out["mesh"]["collection"]["n"] == answered_sampled
    missing = sum(m["missing"] for m in out["modes"].values())
    assert missing == sum(
        1
        for r in ledger
        if r["status"] == 200
        and (r["up_flag"] == "1" or (r["up_flag"] is None and r["up_xrid"][14] == "9"))
        and obs.get(r["up_trace"]) is MISSING
    )


# --- reconcile_reference -------------------------------------------------------------------------


def test_reconcile_reference_states_and_collection() -> None:
    traces = [
        ("a" * 32, "exported", 3),  # found complete
        ("B" * 32, "exported", 3),  # found partial (2 of 3); uppercase id normalised for lookup
        ("c" * 32, "exported", 3),  # missing
        ("0" * 16 + "d" * 16, "exported", 1),  # found under the 64-bit form
        ("e" * 32, "exported", 2),  # backend error -> unknown
        ("f" * 32, "exported", 2),  # never queried -> unknown
        ("1" * 32, "failed", 2),  # failed export, yet found: reported, not counted
        ("2" * 32, "failed", 2),  # failed export, absent
        ("3" * 32, "dropped", 1),
        ("4" * 32, "dropped", 1),  # dropped, backend error: not unknown (not exported)
    ]
    observations = {
        "a" * 32: TraceObservation(FetchStatus.FOUND, 3, ("ref",)),
        "b" * 32: TraceObservation(FetchStatus.FOUND, 2, ("ref",)),
        "c" * 32: MISSING,
        "d" * 16: TraceObservation(FetchStatus.FOUND, 1, ("ref",)),
        "e" * 32: ERROR,
        "1" * 32: TraceObservation(FetchStatus.FOUND, 2, ("ref",)),
        "2" * 32: MISSING,
        "4" * 32: ERROR,
    }
    counters = {"spans_started": 18, "spans_exported": 14}
    out = reconcile_reference(traces, observations, counters)
    assert (out["started"], out["exported"], out["failed"], out["dropped"]) == (10, 6, 2, 2)
    # collection only over exported and answered: a F, B P, c M, d F -> 2 of 4
    assert out["collection"] == prop(2, 4)
    assert out["partial"] == 1
    assert out["unknown"] == 2
    assert out["found_despite_failed_export"] == 1
    assert out["missing_examples"] == ["c" * 32]
    assert out["emitter_counters"] == counters


def test_reconcile_reference_empty() -> None:
    out = reconcile_reference([], {}, {})
    assert (out["started"], out["exported"], out["failed"], out["dropped"]) == (0, 0, 0, 0)
    assert out["collection"] == prop(0, 0)


def test_reconcile_reference_missing_examples_are_capped_at_five() -> None:
    traces = [(tid(i), "exported", 1) for i in range(8)]
    out = reconcile_reference(traces, {tid(i): MISSING for i in range(8)}, {})
    assert out["collection"] == prop(0, 8)
    assert out["missing_examples"] == [tid(i) for i in range(5)]
    assert math.isclose(out["collection"]["ci95"][1], wilson_interval(0, 8)[1])
