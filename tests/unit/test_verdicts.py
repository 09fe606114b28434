"""loadgen.verdicts: collection verdict with unknowns, run verdicts from a reconciled summary, exit codes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadgen.backends.base import FetchStatus
from loadgen.propagation import HeaderMode
from loadgen.reconcile import Expectation, TraceObservation, reconcile_mesh, reconcile_reference
from loadgen.stats import Verdict
from loadgen.verdicts import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_VERDICT_FAILED,
    collection_verdict,
    exit_code_for,
    run_verdicts,
)

# --- collection_verdict --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "unknown", "minimum", "expected"),
    [
        (0, 0, 0, 0.99, Verdict.INCONCLUSIVE),  # nothing decided
        (95, 100, 0, 0.95, Verdict.PASS),  # exactly at the minimum
        (94, 100, 0, 0.95, Verdict.FAIL),
        (100, 100, 0, 1.0, Verdict.PASS),
        (95, 100, 10, 0.90, Verdict.INCONCLUSIVE),  # worst 95/110 < .9 <= best 105/110
        (99, 100, 1, 0.98, Verdict.PASS),  # worst 99/101 >= .98
        (50, 100, 10, 0.90, Verdict.FAIL),  # best 60/110 < .9
        (0, 0, 5, 0.5, Verdict.INCONCLUSIVE),  # all unknown: could be anything
        (0, 0, 5, 0.0, Verdict.PASS),  # no requirement
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
def test_collection_verdict_agrees_with_every_resolution_of_the_unknowns(
    n: int, unknown: int, minimum: float, data: st.DataObject
) -> None:
    """PASS iff every way the unknowns could turn out (j of them found) meets the minimum; FAIL iff
    none does; else INCONCLUSIVE. Nothing decided at all is INCONCLUSIVE."""
    k = data.draw(st.integers(0, n))
    verdict = collection_verdict(k, n, unknown, minimum)
    if n + unknown == 0:
        assert verdict is Verdict.INCONCLUSIVE
        return
    meets = [(k + j) / (n + unknown) >= minimum for j in range(unknown + 1)]
    if all(meets):
        assert verdict is Verdict.PASS
    elif not any(meets):
        assert verdict is Verdict.FAIL
    else:
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
) -> dict[str, Any]:
    summary: dict[str, Any] = {"run_id": "t"}
    summary.update(reconcile_mesh(ledger, obs, EXPECT))
    summary["reference"] = reconcile_reference(reference or [], obs, {})
    return summary


def balanced_ledger(count: int = 40) -> tuple[list[dict[str, Any]], dict[str, TraceObservation]]:
    """Half sampled (all collected), half not (all absent): an honest 50 % proxy."""
    ledger = [request(i, sampled=i % 2 == 0) for i in range(count)]
    obs = {tid(i): (GOOD if i % 2 == 0 else MISSING) for i in range(count)}
    return ledger, obs


def test_all_good_run_passes_and_exits_0() -> None:
    ledger, obs = balanced_ledger()
    ref = [(tid(1000 + i), "exported", 1) for i in range(5)]
    obs.update({tid(1000 + i): GOOD for i in range(5)})
    verdicts = run_verdicts(summary_for(ledger, obs, ref), min_collection=0.99)
    assert verdicts == {
        "sampling": "pass",
        "mesh_collection": "pass",
        "no_leaks": "pass",
        "sampling_prediction": "pass",
        "reference_collection": "pass",
    }
    assert exit_code_for(verdicts) == EXIT_OK


def test_a_leak_fails_the_run() -> None:
    ledger, obs = balanced_ledger()
    obs[tid(1)] = GOOD  # request 1 was decided not sampled, yet the backend has it
    verdicts = run_verdicts(summary_for(ledger, obs), min_collection=0.99)
    assert verdicts["no_leaks"] == "fail"
    assert "reference_collection" not in verdicts  # no reference traces started
    assert exit_code_for(verdicts) == EXIT_VERDICT_FAILED


def test_a_prediction_mismatch_fails_the_run() -> None:
    ledger, obs = balanced_ledger()
    # sampled per the mark, but Envoy's rule on this head (9999 >= 5000) says not sampled
    ledger[0]["up_xrid"] = "0000270f-0000-9000-8000-000000000000"
    verdicts = run_verdicts(summary_for(ledger, obs), min_collection=0.99)
    assert verdicts["sampling_prediction"] == "fail"
    assert exit_code_for(verdicts) == EXIT_VERDICT_FAILED


def test_missing_traces_fail_collection_but_backend_errors_are_inconclusive() -> None:
    ledger, obs = balanced_ledger()
    for i in (0, 2):  # 2 of 20 sampled traces missing: 18/20 < 0.99
        obs[tid(i)] = MISSING
    assert run_verdicts(summary_for(ledger, obs), 0.99)["mesh_collection"] == "fail"
    for i in (0, 2):  # the same two, but the backend could not be asked: could be either
        obs[tid(i)] = ERROR
    verdicts = run_verdicts(summary_for(ledger, obs), 0.99)
    assert verdicts["mesh_collection"] == "inconclusive"
    assert exit_code_for(verdicts) == EXIT_OK


def test_reference_collection_verdict() -> None:
    ledger, obs = balanced_ledger()
    ref = [(tid(2000 + i), "exported", 2) for i in range(4)] + [(tid(2100), "failed", 2)]
    obs.update({tid(2000): TraceObservation(FetchStatus.FOUND, 2, ("ref",)), tid(2001): MISSING})
    # exported and answered: 1 found of 2; tid(2002), tid(2003) never queried -> unknown 2
    # best (1+2)/4 = .75 < .99 -> fail
    verdicts = run_verdicts(summary_for(ledger, obs, ref), 0.99)
    assert verdicts["reference_collection"] == "fail"
    # with a 0.5 minimum: worst 1/4 < .5 <= best 3/4 -> inconclusive
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


def test_no_prediction_checked_means_no_prediction_verdict() -> None:
    ledger, obs = balanced_ledger()
    for r in ledger:
        r["up_xrid"] = None
    assert "sampling_prediction" not in run_verdicts(summary_for(ledger, obs), 0.99)


# --- exit codes ----------------------------------------------------------------------------------


def test_exit_codes() -> None:
    assert exit_code_for({}) == EXIT_OK == 0
    assert exit_code_for({"a": "pass", "b": "inconclusive"}) == 0
    assert exit_code_for({"a": "pass", "b": "fail"}) == EXIT_VERDICT_FAILED == 1
    assert exit_code_for({"a": "fail"}, partial=True) == EXIT_INTERRUPTED == 130
    assert exit_code_for({"a": "pass"}, partial=True) == 130
