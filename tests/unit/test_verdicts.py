"""loadgen.analysis.verdicts: collection verdict with unknowns, run verdicts from a reconciled summary, exit codes."""

from __future__ import annotations

import inspect
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sp_stats

from loadgen.analysis import verdicts as verdicts_module
from loadgen.analysis.reconcile import Expectation, TraceObservation, reconcile_mesh, reconcile_reference
from loadgen.analysis.stats import Verdict
from loadgen.analysis.verdicts import (
    DEFAULT_MAX_ERROR_RATE,
    VerdictDetail,
    collection_verdict,
    exit_code_for,
    run_verdicts,
)
from loadgen.backends.base import FetchStatus
from loadgen.cli.run import run as run_command
from loadgen.exitcodes import EXIT_INCONCLUSIVE, EXIT_INTERRUPTED, EXIT_OK, EXIT_VERDICT_FAILED
from loadgen.mesh.modes import HeaderMode
from loadgen.run import RunOptions

# --- collection_verdict: the Wilson interval against the minimum ------------------------------------


def scipy_wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's 95 % interval from SciPy (an oracle independent of loadgen.analysis.stats)."""
    ci = sp_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def test_wilson_oracle_matches_published_values() -> None:
    # Newcombe, Statistics in Medicine 17 (1998) 857-872, Table I, method 3 (score, no correction)
    for (k, n), (low, high) in {
        (81, 263): (0.2553, 0.3662),
        (15, 148): (0.0624, 0.1605),
        (0, 20): (0.0, 0.1611),
        (1, 29): (0.0061, 0.1718),
    }.items():
        got = scipy_wilson(k, n)
        assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(
    ("k", "n", "unknown", "minimum", "expected"),
    [
        (0, 0, 0, 0.99, Verdict.INCONCLUSIVE),  # nothing decided
        (0, 0, 5, 0.5, Verdict.INCONCLUSIVE),  # all unknown: could be anything
        (0, 0, 5, 0.0, Verdict.INCONCLUSIVE),  # no requirement, but nothing checked either
        (1, 1, 0, 0.99, Verdict.INCONCLUSIVE),  # 1 of 1 is no evidence of 99 % (it passed before)
        (98, 100, 0, 0.99, Verdict.INCONCLUSIVE),  # [0.930, 0.9945] straddles 0.99 (it failed before)
        (200, 200, 0, 0.99, Verdict.INCONCLUSIVE),  # low end 0.981 (the old default reference run)
        (400, 400, 0, 0.99, Verdict.PASS),  # low end 0.9905
        (90, 100, 0, 0.99, Verdict.FAIL),  # high end 0.945
        (0, 20, 0, 0.17, Verdict.FAIL),  # Newcombe's 0/20: high end 0.1611 < 0.17
        (0, 20, 0, 0.16, Verdict.INCONCLUSIVE),  # ... but not < 0.16
        (400, 400, 0, 1.0, Verdict.INCONCLUSIVE),  # 100 % is never shown by a sample
        (399, 400, 0, 1.0, Verdict.FAIL),  # ... but one miss disproves it
        (400, 400, 5, 0.99, Verdict.INCONCLUSIVE),  # 400/405 low 0.972: the unknowns widen it
        (81, 263, 0, 0.37, Verdict.FAIL),  # Newcombe's 81/263: high end 0.3662
    ],
)
def test_collection_verdict(k: int, n: int, unknown: int, minimum: float, expected: Verdict) -> None:
    assert collection_verdict(k, n, unknown, minimum) is expected


@given(
    n=st.integers(0, 300),
    unknown=st.integers(0, 60),
    minimum=st.sampled_from([0.0, 0.5, 0.9, 0.95, 0.99, 1.0]),
    data=st.data(),
)
def test_collection_verdict_agrees_with_the_wilson_interval_of_every_resolution_of_the_unknowns(
    n: int, unknown: int, minimum: float, data: st.DataObject
) -> None:
    """PASS iff the interval's low end meets the minimum however the unknowns turn out (the worst
    case: all missing); FAIL iff its high end is below it however they turn out (the best case: all
    found); else INCONCLUSIVE. Nothing checked (n = 0) is INCONCLUSIVE."""
    k = data.draw(st.integers(0, n))
    verdict = collection_verdict(k, n, unknown, minimum)
    if n == 0:
        assert verdict is Verdict.INCONCLUSIVE
        return
    total = n + unknown
    lows = [scipy_wilson(k + j, total)[0] for j in (0, unknown)]
    highs = [scipy_wilson(k + j, total)[1] for j in (0, unknown)]
    eps = 1e-12
    if min(lows) >= minimum + eps:
        assert verdict is Verdict.PASS
    elif max(highs) < minimum - eps:
        assert verdict is Verdict.FAIL
    elif min(lows) < minimum - eps and max(highs) >= minimum + eps:
        assert verdict is Verdict.INCONCLUSIVE


# --- run_verdicts on summaries built by the reconciler -------------------------------------------

EXPECT = Expectation(spans_per_trace=1, services=("gateway",), configured_percent=50.0)
GOOD = TraceObservation(FetchStatus.FOUND, 1, ("gateway",))
MISSING = TraceObservation(FetchStatus.MISSING)
ERROR = TraceObservation(FetchStatus.ERROR, error="boom")


def tid(i: int) -> str:
    return f"{0xFACE000000000000 + i:016x}{i:016x}"


def request(i: int, sampled: bool, **extra: Any) -> dict[str, Any]:
    # head 0..4999 -> Envoy's rule at 50 % says sampled; the mark in char 14 agrees with `sampled`.
    head = 100 + i if sampled else 6000 + i
    xrid = f"{head:08x}-0000-{'9' if sampled else '4'}000-8000-000000000000"
    base = {
        "rid": f"r{i}",
        "mode": HeaderMode.NONE.value,
        "status": 200,
        "ts": 1.0,
        "latency_ms": 1.0,
        "up_trace": tid(i),
        "up_flag": "1" if sampled else "0",
        "up_xrid": xrid,
    }
    base.update(extra)
    return base


def summary_for(
    ledger: list[dict[str, Any]],
    obs: dict[str, TraceObservation],
    reference: list[tuple[str, str, int]] | None = None,
    expect: Expectation = EXPECT,
) -> dict[str, Any]:
    summary: dict[str, Any] = {"run_id": "t"}
    summary.update(reconcile_mesh(ledger, obs, expect))
    summary["reference"] = reconcile_reference(reference or [], obs, {})
    return summary


def balanced_ledger(count: int = 40) -> tuple[list[dict[str, Any]], dict[str, TraceObservation]]:
    """Half sampled (all collected), half not (all absent): an honest 50 % proxy."""
    ledger = [request(i, sampled=i % 2 == 0) for i in range(count)]
    obs = {tid(i): (GOOD if i % 2 == 0 else MISSING) for i in range(count)}
    return ledger, obs


def needed_all_found(threshold: float) -> int:
    """The fewest traces, all found, whose Wilson low end reaches the threshold (SciPy, by scan)."""
    n = 1
    while scipy_wilson(n, n)[0] < threshold:
        n += 1
    return n


# Enough sampled traces for a Wilson pass at 0.99 (computed, not assumed).
HEALTHY = 2 * needed_all_found(0.99)


def healthy_summary() -> dict[str, Any]:
    ledger, obs = balanced_ledger(HEALTHY)
    refs = needed_all_found(0.99)
    ref = [(tid(100_000 + i), "exported", 1) for i in range(refs)]
    obs.update({tid(100_000 + i): GOOD for i in range(refs)})
    return summary_for(ledger, obs, ref)


def test_all_good_run_passes_and_exits_0() -> None:
    summary = healthy_summary()
    verdicts = run_verdicts(summary, min_collection=0.99)
    assert verdicts == {
        "load_delivered": "pass",
        "sampling": "pass",
        "mesh_collection": "pass",
        "no_leaks": "pass",
        "sampling_prediction": "pass",
        "reference_collection": "pass",
    }
    assert exit_code_for(verdicts) == EXIT_OK
    details = summary["verdict_details"]
    assert set(details) == set(verdicts)
    assert all(d["verdict"] == verdicts[name] and d["cause"] is None for name, d in details.items())
    half = HEALTHY // 2
    # every verdict says how much it checked: decisions, sampled traces, not-sampled traces ...
    assert details["sampling"]["checked"] == HEALTHY and details["sampling"]["basis"] == "exact"
    assert details["sampling_prediction"]["checked"] == HEALTHY
    assert details["mesh_collection"]["checked"] == half and details["mesh_collection"]["basis"] == "wilson95"
    assert details["no_leaks"]["checked"] == half
    assert details["reference_collection"]["checked"] == HEALTHY // 2
    assert (
        details["load_delivered"]["checked"] == HEALTHY
        and details["load_delivered"]["basis"] == "error_share"
    )
    assert summary["max_error_rate"] == DEFAULT_MAX_ERROR_RATE == 0.05  # the threshold it was judged with
    assert all(d["checked"] >= d["minimum"] >= 1 for d in details.values())
    assert json.loads(json.dumps(details)) == details  # plain JSON


def test_verdict_details_are_typed_and_round_trip() -> None:
    detail = VerdictDetail(Verdict.FAIL, 12, 1, "exact", "3 leaked of 12 queried")
    assert VerdictDetail.from_dict(detail.to_dict()) == detail
    assert detail.to_dict() == {
        "verdict": "fail", "checked": 12, "minimum": 1, "basis": "exact", "cause": "3 leaked of 12 queried",
    }  # fmt: skip
    with pytest.raises(ValueError):
        VerdictDetail(Verdict.PASS, 0, 1, "exact")  # a pass needs evidence
    with pytest.raises(ValueError):
        VerdictDetail(Verdict.FAIL, 3, 1, "exact")  # a fail needs a cause
    with pytest.raises(ValueError):
        VerdictDetail(Verdict.PASS, 3, 1, "exact", "why?")  # a pass has none


def test_a_leak_fails_the_run_and_says_k_leaked_of_n_queried() -> None:
    ledger, obs = balanced_ledger()
    obs[tid(1)] = GOOD  # request 1 was decided not sampled, yet the backend has it
    summary = summary_for(ledger, obs)
    verdicts = run_verdicts(summary, min_collection=0.99)
    assert verdicts["no_leaks"] == "fail"
    assert "reference_collection" not in verdicts  # no reference traces started
    assert exit_code_for(verdicts) == EXIT_VERDICT_FAILED
    detail = summary["verdict_details"]["no_leaks"]
    assert detail["checked"] == 20  # the 20 odd requests were decided not sampled and queried
    assert detail["cause"].startswith("1 leaked of 20 queried, most in none (1 of 20 decided not sampled)")


def polls(count: int, queried: int, errors: int) -> dict[str, Any]:
    return {
        "polls": [{"t": float(i), "queried": queried, "complete": 0, "errors": errors} for i in range(count)]
    }


def test_no_leaks_is_inconclusive_when_the_backend_went_away() -> None:
    """The real failure: the backend gone, none of 309 decided-not-sampled traces was queried, and
    `no_leaks` passed because leaked == 0."""
    ledger = [request(i, sampled=i >= 309) for i in range(400)]
    obs = {tid(i): ERROR for i in range(400)}
    summary = summary_for(ledger, obs)
    summary["readback"] = polls(3, 400, 400)
    verdicts = run_verdicts(summary, 0.99)
    assert summary["mesh"]["leaked"] == 0 and summary["mesh"]["leak_checked"] == 0
    assert verdicts["no_leaks"] == "inconclusive" and verdicts["mesh_collection"] == "inconclusive"
    leak = summary["verdict_details"]["no_leaks"]
    assert leak["checked"] == 0
    assert leak["cause"] == (
        "no decided-not-sampled trace was queried (309 decided not sampled, all unknown: every poll of the "
        "backend failed (3 polls))"
    )
    assert "every poll of the backend failed" in summary["verdict_details"]["mesh_collection"]["cause"]
    assert "all 91 sampled mesh traces are unknown" in summary["verdict_details"]["mesh_collection"]["cause"]
    assert exit_code_for(verdicts) == EXIT_INCONCLUSIVE == 3


def test_no_leaks_without_any_not_sampled_request_is_inconclusive() -> None:
    ledger = [request(i, sampled=True) for i in range(10)]
    summary = summary_for(ledger, {tid(i): GOOD for i in range(10)})
    run_verdicts(summary, 0.99)
    detail = summary["verdict_details"]["no_leaks"]
    assert detail["verdict"] == "inconclusive" and detail["checked"] == 0
    assert detail["cause"].startswith("no decided-not-sampled trace was queried (no request was decided not")


def test_a_prediction_mismatch_fails_the_run() -> None:
    ledger, obs = balanced_ledger()
    # sampled per the mark, but Envoy's rule on this head (9999 >= 5000) says not sampled
    ledger[0]["up_xrid"] = "0000270f-0000-9000-8000-000000000000"
    summary = summary_for(ledger, obs)
    verdicts = run_verdicts(summary, min_collection=0.99)
    assert verdicts["sampling_prediction"] == "fail"
    assert exit_code_for(verdicts) == EXIT_VERDICT_FAILED
    cause = summary["verdict_details"]["sampling_prediction"]["cause"]
    assert cause.startswith("1 of 40 decisions disagree with Envoy's x-request-id rule at 50 %")


def test_prediction_mismatches_in_x_request_id_modes_are_named() -> None:
    summary = healthy_summary()
    summary["sampling"]["prediction"].update(
        checked=120, mismatches=10,
        by_mode={"xrid_crafted": {"checked": 60, "mismatches": 9}, "none": {"checked": 60, "mismatches": 1}},
    )  # fmt: skip
    run_verdicts(summary, 0.99)
    cause = summary["verdict_details"]["sampling_prediction"]["cause"]
    assert cause.startswith(
        "9 of 10 mismatches are in modes that send an x-request-id (xrid_crafted: 9 of 60)"
    )


def test_missing_traces_fail_collection_but_backend_errors_are_inconclusive() -> None:
    ledger, obs = balanced_ledger()
    for i in (0, 2):  # 2 of 20 sampled traces missing: 18/20, Wilson high 0.972 < 0.99
        obs[tid(i)] = MISSING
    summary = summary_for(ledger, obs)
    assert run_verdicts(summary, 0.99)["mesh_collection"] == "fail"
    assert summary["verdict_details"]["mesh_collection"]["cause"].startswith(
        "2 of 20 sampled traces are missing"
    )
    for i in (0, 2):  # the same two, but the backend could not be asked: could be either
        obs[tid(i)] = ERROR
    summary = summary_for(ledger, obs)
    verdicts = run_verdicts(summary, 0.99)
    assert verdicts["mesh_collection"] == "inconclusive"
    assert exit_code_for(verdicts) == EXIT_INCONCLUSIVE


def test_an_inconclusive_collection_names_the_traces_it_needs() -> None:
    ledger, obs = balanced_ledger(400)  # 200 sampled, all found: Wilson low 0.981 < 0.99
    summary = summary_for(ledger, obs)
    assert run_verdicts(summary, 0.99)["mesh_collection"] == "inconclusive"
    cause = summary["verdict_details"]["mesh_collection"]["cause"]
    assert f"at least {needed_all_found(0.99):,} traces (all found) are needed" in cause
    low, high = scipy_wilson(200, 200)
    assert f"[{low:.4f}, {high:.4f}]" in cause
    # a minimum of 1 is never shown by a sample
    run_verdicts(summary, 1.0)
    assert "can never be shown by a sample" in summary["verdict_details"]["mesh_collection"]["cause"]


def test_default_run_sends_enough_reference_traces_to_conclude() -> None:
    """The README's default run (10 s) must be able to pass reference collection at 0.99 on a
    healthy mesh: its reference traces, all found, must put the Wilson low end above 0.99."""
    opts = RunOptions()
    sent = opts.reference_rate * opts.duration_s
    assert sent >= needed_all_found(opts.min_collection)
    assert scipy_wilson(int(sent), int(sent))[0] >= opts.min_collection
    cli_default = inspect.signature(run_command).parameters["reference_rate"].default
    assert cli_default == opts.reference_rate


def test_reference_spans_arriving_while_mesh_spans_do_not_blames_the_mesh_path() -> None:
    ledger, obs = balanced_ledger()
    for i in range(0, 40, 2):
        obs[tid(i)] = MISSING  # every sampled mesh trace missing
    ref = [(tid(2000 + i), "exported", 1) for i in range(30)]
    obs.update({tid(2000 + i): GOOD for i in range(30)})
    summary = summary_for(ledger, obs, ref)
    assert run_verdicts(summary, 0.99)["mesh_collection"] == "fail"
    cause = summary["verdict_details"]["mesh_collection"]["cause"]
    assert cause.startswith("reference spans arrive (30 of 30 reference traces found) but none of 20")
    assert "mesh→collector path is broken" in cause


def test_partial_traces_are_explained_by_the_span_count_histogram() -> None:
    three = Expectation(spans_per_trace=3, services=("gateway", "sidecar"), configured_percent=50.0)
    ledger, obs = balanced_ledger()
    two = TraceObservation(FetchStatus.FOUND, 2, ("gateway", "sidecar"))
    for i in range(0, 40, 2):
        obs[tid(i)] = two  # every sampled trace holds 2 of its 3 spans
    summary = summary_for(ledger, obs, expect=three)
    summary["mesh"]["expected_shape"] = [
        ["gateway", "SERVER", 1],
        ["gateway", "CLIENT", 1],
        ["sidecar", "SERVER", 1],
    ]
    assert run_verdicts(summary, 0.99)["mesh_collection"] == "fail"
    cause = summary["verdict_details"]["mesh_collection"]["cause"]
    assert cause.startswith("20 of 20 sampled traces are partial: most traces found hold 2 spans (20 traces)")
    assert "a complete one has 3 spans (gateway SERVER ×1, gateway CLIENT ×1, sidecar SERVER ×1)" in cause


def test_reference_collection_verdict() -> None:
    ledger, obs = balanced_ledger()
    ref = [(tid(2000 + i), "exported", 2) for i in range(4)] + [(tid(2100), "failed", 2)]
    obs.update({tid(2000): TraceObservation(FetchStatus.FOUND, 2, ("ref",)), tid(2001): MISSING})
    # exported and answered: 1 found of 2; tid(2002), tid(2003) never queried -> unknown 2
    # best case Wilson(3, 4) high 0.954 < .99 -> fail
    assert scipy_wilson(3, 4)[1] < 0.99
    summary = summary_for(ledger, obs, ref)
    verdicts = run_verdicts(summary, 0.99)
    assert verdicts["reference_collection"] == "fail"
    assert summary["verdict_details"]["reference_collection"]["checked"] == 2
    # with a 0.5 minimum: worst Wilson(1, 4) low 0.046 < .5 <= best high -> inconclusive
    assert run_verdicts(summary_for(ledger, obs, ref), 0.5)["reference_collection"] == "inconclusive"


def test_sampling_verdict_is_carried_from_the_reconciled_summary() -> None:
    # 40 decisions, all sampled, at a configured 50 %: p = 2 * 0.5**40, far below 0.001. No
    # x-request-id is echoed, so nothing can be checked against Envoy's rule: the verdict is the
    # statistical one.
    ledger = [request(i, sampled=True, up_xrid=None) for i in range(40)]
    obs = {tid(i): GOOD for i in range(40)}
    summary = summary_for(ledger, obs)
    assert summary["sampling"]["prediction"]["checked"] == 0
    assert summary["sampling"]["verdict"] == "fail"
    verdicts = run_verdicts(summary, 0.99)
    assert verdicts["sampling"] == "fail"
    assert exit_code_for(verdicts) == EXIT_VERDICT_FAILED
    cause = summary["verdict_details"]["sampling"]["cause"]
    assert cause.startswith("observed 100.00%") and "samples more than configured" in cause


def smallest_n_that_can_fail(p: float) -> int:
    """The fewest decisions at which both all-sampled and none-sampled fail at p (SciPy scan)."""

    def fails(k: int, n: int) -> bool:
        low, high = scipy_wilson(k, n)
        return not low <= p <= high and sp_stats.binomtest(k, n, p).pvalue < 0.001

    n = 1
    while not (fails(0, n) and fails(n, n)):
        n += 1
    return n


def test_a_statistical_sampling_pass_on_too_few_decisions_is_inconclusive() -> None:
    # 4 decisions at 50 %, 2 sampled: the interval holds 0.5 (a pass), but no proxy could have
    # failed with so few decisions.
    ledger = [request(i, sampled=i % 2 == 0, up_xrid=None) for i in range(4)]
    summary = summary_for(ledger, {})
    assert summary["sampling"]["verdict"] == "pass"
    verdicts = run_verdicts(summary, 0.99)
    detail = summary["verdict_details"]["sampling"]
    assert verdicts["sampling"] == "inconclusive"
    assert detail["basis"] == "statistical" and detail["checked"] == 4
    assert detail["minimum"] == smallest_n_that_can_fail(0.5)
    assert detail["cause"].startswith(f"4 decisions; at least {detail['minimum']} are needed")
    # enough decisions: the same 50/50 split passes
    ledger = [request(i, sampled=i % 2 == 0, up_xrid=None) for i in range(2 * detail["minimum"])]
    assert run_verdicts(summary_for(ledger, {}), 0.99)["sampling"] == "pass"


def test_sampling_without_a_configured_percentage_says_so() -> None:
    ledger, obs = balanced_ledger()
    summary = {"run_id": "t", **reconcile_mesh(ledger, obs, replace(EXPECT, configured_percent=None))}
    summary["reference"] = reconcile_reference([], obs, {})
    assert run_verdicts(summary, 0.99)["sampling"] == "inconclusive"
    assert "--expect" in summary["verdict_details"]["sampling"]["cause"]


def test_no_prediction_checked_means_no_prediction_verdict() -> None:
    ledger, obs = balanced_ledger()
    for r in ledger:
        r["up_xrid"] = None
    assert "sampling_prediction" not in run_verdicts(summary_for(ledger, obs), 0.99)


# --- header modes ------------------------------------------------------------------------------


def forced(i: int, saw_sampled: bool | None) -> dict[str, Any]:
    """A b3_multi_sampled request (forced sampled, id kept); None: no echo at all."""
    rec: dict[str, Any] = {
        "rid": f"f{i}", "mode": HeaderMode.B3_MULTI_SAMPLED.value, "status": 200, "ts": 1.0,
        "latency_ms": 1.0, "inj_trace": tid(500 + i), "inj_flag": "1",
    }  # fmt: skip
    if saw_sampled is not None:
        rec.update(up_trace=tid(500 + i), up_flag="1" if saw_sampled else "0")
    return rec


def test_header_modes_fail_on_violations_and_name_the_mode_and_kind() -> None:
    ledger, obs = balanced_ledger()
    ledger += [forced(i, saw_sampled=i >= 3) for i in range(8)]  # 3 of 8 not traced as forced
    summary = summary_for(ledger, obs)
    verdicts = run_verdicts(summary, 0.99)
    assert verdicts["header_modes"] == "fail"
    detail = summary["verdict_details"]["header_modes"]
    assert detail["checked"] == 8  # only the forced mode has a definite expectation here
    assert detail["cause"] == (
        "b3_multi_sampled: 3 of 8 not traced as forced — overall_sampling or client_sampling below 100?"
    )
    assert summary["modes"]["b3_multi_sampled"]["violations"]["decision"] == 3
    assert exit_code_for(verdicts) == EXIT_VERDICT_FAILED


def test_header_modes_pass_when_every_checked_request_behaves() -> None:
    ledger, obs = balanced_ledger()
    ledger += [forced(i, saw_sampled=True) for i in range(5)]
    summary = summary_for(ledger, obs)
    assert run_verdicts(summary, 0.99)["header_modes"] == "pass"
    assert summary["verdict_details"]["header_modes"]["checked"] == 5


def test_header_modes_without_echo_are_inconclusive_not_passed() -> None:
    ledger, obs = balanced_ledger()
    ledger += [forced(i, saw_sampled=None) for i in range(5)]  # nothing shows what the upstream saw
    summary = summary_for(ledger, obs)
    assert run_verdicts(summary, 0.99)["header_modes"] == "inconclusive"
    detail = summary["verdict_details"]["header_modes"]
    assert detail["checked"] == 0
    assert detail["cause"].startswith("none of the 5 answered requests of modes with a definite expectation")


def test_a_mix_without_definite_expectations_has_no_header_modes_verdict() -> None:
    ledger, obs = balanced_ledger()  # mode `none` only: Envoy decides, nothing definite
    assert "header_modes" not in run_verdicts(summary_for(ledger, obs), 0.99)


# --- facts the probe could not learn -------------------------------------------------------------


def test_expectation_gaps_make_verdicts_inconclusive_with_the_reason() -> None:
    summary = healthy_summary()
    reason = "the trace shape is unknown: no probe request was answered"
    summary["expectation_gaps"] = {"mesh_collection": reason, "propagation_integrity": reason}
    verdicts = run_verdicts(summary, 0.99)
    details = summary["verdict_details"]
    assert verdicts["mesh_collection"] == "inconclusive"
    assert details["mesh_collection"]["cause"] == reason
    assert details["mesh_collection"]["checked"] == HEALTHY // 2  # the evidence is still reported
    # a verdict this run does not judge (no hops were traced here) is not invented
    assert "propagation_integrity" not in verdicts and set(details) == set(verdicts)
    assert verdicts["sampling"] == "pass"  # untouched
    assert exit_code_for(verdicts) == EXIT_INCONCLUSIVE


def test_a_gap_turns_even_a_fail_inconclusive() -> None:
    ledger, obs = balanced_ledger()
    obs[tid(1)] = GOOD  # a leak
    summary = summary_for(ledger, obs)
    summary["expectation_gaps"] = {"no_leaks": "the upstream does not echo request headers"}
    assert run_verdicts(summary, 0.99)["no_leaks"] == "inconclusive"
    assert summary["verdict_details"]["no_leaks"]["cause"] == "the upstream does not echo request headers"


def test_a_total_loss_fails_even_with_the_trace_shape_unknown() -> None:
    """Nothing of any sampled trace arrived: collection is 0 under any shape, so the shape gap
    does not hide the failure (issue 9: no probe trace came back from a collector losing all)."""
    ledger, obs = balanced_ledger(HEALTHY)
    lost = {t: (MISSING if o is GOOD else o) for t, o in obs.items()}
    unknown_shape = Expectation(0, (), 50.0)  # what a run expects when the probe learned no shape
    summary = summary_for(ledger, lost, expect=unknown_shape)
    gap = "the trace shape is unknown: none of 12 sampled probe traces came back"
    summary["expectation_gaps"] = {"mesh_collection": gap}
    assert run_verdicts(summary, 0.99)["mesh_collection"] == "fail"
    cause = summary["verdict_details"]["mesh_collection"]["cause"]
    assert "any span as complete" in cause and gap in cause
    # The same gap with every trace present: the upper bound passes, which proves nothing.
    present = summary_for(ledger, obs, expect=unknown_shape)
    present["expectation_gaps"] = {"mesh_collection": gap}
    assert run_verdicts(present, 0.99)["mesh_collection"] == "inconclusive"


# --- load_delivered: a run that sent nothing, or mostly errors, does not pass ------------------------


def with_errors(count: int, failed: int, status: int = 503, error: str | None = None) -> dict[str, Any]:
    """A healthy run's first `count` requests, the first `failed` of them answered `status`."""
    ledger, obs = balanced_ledger(count)
    for rec in ledger[:failed]:
        rec.update(status=status, error=error or f"HTTP {status}", up_trace=None, up_flag=None, up_xrid=None)
    return summary_for(ledger, obs)


def test_a_run_that_made_no_request_fails_load_delivered_and_the_run() -> None:
    summary = summary_for([], {})
    verdicts = run_verdicts(summary, 0.99)
    assert verdicts["load_delivered"] == "fail"
    detail = summary["verdict_details"]["load_delivered"]
    assert detail["checked"] == 0 and detail["minimum"] == 1
    assert detail["cause"].startswith("no request was made") and "locust.log" in detail["cause"]
    # the other verdicts have no evidence and stay inconclusive: the run fails on load_delivered
    assert {v for name, v in verdicts.items() if name != "load_delivered"} == {"inconclusive"}
    assert exit_code_for(verdicts) == EXIT_VERDICT_FAILED


def test_a_summary_without_requests_fails_rather_than_passes() -> None:
    summary = healthy_summary()
    del summary["requests"]
    assert run_verdicts(summary, 0.99)["load_delivered"] == "fail"
    assert "no requests" in summary["verdict_details"]["load_delivered"]["cause"]


def test_every_request_failing_fails_and_names_the_commonest_error() -> None:
    summary = with_errors(40, 40, status=404)
    assert run_verdicts(summary, 0.99)["load_delivered"] == "fail"
    cause = summary["verdict_details"]["load_delivered"]["cause"]
    assert cause.startswith("40 of 40 requests failed (100.0%, above the maximum 5.0%)"), cause
    assert "most common: HTTP 404, 40 of 40 requests" in cause and "--host" in cause


def test_no_response_errors_are_named_with_their_message() -> None:
    refused = "ConnectionRefusedError(111, 'Connection refused')"
    summary = with_errors(40, 30, status=0, error=refused)
    run_verdicts(summary, 0.99)
    cause = summary["verdict_details"]["load_delivered"]["cause"]
    assert f"most common: no response ({refused}), 30 of 40 requests" in cause


def test_a_few_errors_under_the_default_maximum_pass() -> None:
    summary = with_errors(100, 3)  # 3 %
    assert run_verdicts(summary, 0.99)["load_delivered"] == "pass"
    assert summary["verdict_details"]["load_delivered"]["checked"] == 100
    assert run_verdicts(with_errors(100, 5), 0.99)["load_delivered"] == "pass"  # 5 % is not above 5 %
    assert run_verdicts(with_errors(100, 6), 0.99)["load_delivered"] == "fail"


def test_the_maximum_error_rate_is_honoured_and_recorded() -> None:
    summary = with_errors(100, 3)
    assert run_verdicts(summary, 0.99, max_error_rate=0.02)["load_delivered"] == "fail"
    assert summary["max_error_rate"] == 0.02
    assert "above the maximum 2.0%" in summary["verdict_details"]["load_delivered"]["cause"]
    lenient = with_errors(40, 40)
    assert run_verdicts(lenient, 0.99, max_error_rate=1.0)["load_delivered"] == "pass"
    # ... but no maximum lets a run that sent nothing pass
    assert run_verdicts(summary_for([], {}), 0.99, max_error_rate=1.0)["load_delivered"] == "fail"
    # the default of every caller that does not pass one (calibrate, capacity: RunOptions)
    assert RunOptions().max_error_rate == DEFAULT_MAX_ERROR_RATE


def test_the_readme_and_the_cli_document_load_delivered() -> None:
    docs = Path(__file__).parents[2] / "docs"
    outputs, statistics = (docs / "outputs.md").read_text(), (docs / "statistics.md").read_text()
    schema = next(line for line in outputs.splitlines() if line.startswith("| `verdicts.{"))
    assert "load_delivered" in schema and "| `load_delivered` |" in statistics
    assert "requests.top_errors" in outputs and "`max_error_rate`" in outputs
    assert "requests.top_errors" in statistics and "`max_error_rate`" in statistics
    run_default = inspect.signature(run_command).parameters["max_error_rate"].default
    assert run_default == RunOptions().max_error_rate == DEFAULT_MAX_ERROR_RATE


# --- exit codes ----------------------------------------------------------------------------------


def test_exit_codes() -> None:
    assert exit_code_for({"a": "pass", "b": "pass"}) == EXIT_OK == 0
    assert exit_code_for({"a": "pass", "b": "inconclusive"}) == EXIT_INCONCLUSIVE == 3
    assert exit_code_for({"a": "pass", "b": "fail"}) == EXIT_VERDICT_FAILED == 1
    assert exit_code_for({"a": "inconclusive", "b": "fail"}) == 1  # a failure outranks doubt
    assert exit_code_for({"a": "fail"}, partial=True) == EXIT_INTERRUPTED == 130
    assert exit_code_for({"a": "pass"}, partial=True) == 130
    assert exit_code_for({}) == 0  # nothing judged, nothing failed


def test_the_module_docstring_documents_every_exit_code() -> None:
    doc = verdicts_module.__doc__ or ""
    for code, words in ((0, "every verdict passed"), (1, "failed"), (2, "could not be done"),
                        (3, "inconclusive"), (130, "interrupted")):  # fmt: skip
        line = next(line for line in doc.splitlines() if line.strip().startswith(f"{code} "))
        assert words in line, line
