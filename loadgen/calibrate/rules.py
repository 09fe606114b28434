"""The stopping rules: each look's decision and the final verdict in words (pure)."""

from __future__ import annotations

from typing import Any

from loadgen.analysis.planner import SequentialDecision, SequentialPlan, max_disagreement, sequential_decision
from loadgen.analysis.stats import Verdict, binom_test_two_sided
from loadgen.calibrate.document import points
from loadgen.calibrate.model import CalibrateOptions, Totals

__all__ = ["evaluate_look", "final_verdict"]


def evaluate_look(
    index: int,
    look_n: int,
    seq: SequentialPlan,
    p: float,
    totals: Totals,
    opts: CalibrateOptions,
    exact_needed: int,
) -> dict[str, Any]:
    """The look's record and, under "_stop", (verdict, basis, reason) when the calibration stops."""
    last = index == len(seq.looks) - 1
    look: dict[str, Any] = {
        "look": index + 1,
        "planned": look_n,
        "requests": totals.requests,
        "decisions": {"k": totals.k, "n": totals.n},
        "prediction": {"checked": totals.checked, "mismatches": totals.mismatches},
        "alpha": seq.alphas[index],
        "p_value": binom_test_two_sided(totals.k, totals.n, p) if totals.n else None,
    }
    stat = sequential_decision(totals.k, totals.n, p, seq, index)
    look["statistical"] = stat.value
    stop: tuple[Verdict, str, str] | None = None
    exact = opts.use_prediction and totals.n > 0 and totals.checked == totals.n
    if opts.use_prediction and totals.mismatches:
        stop = (Verdict.FAIL, "exact", "mismatch")
    elif exact and totals.checked >= exact_needed:
        stop = (Verdict.PASS, "exact", "agreement")
    elif exact and not last:
        pass  # every decision is being checked: the exact evidence decides, statistics only inform
    elif stat is SequentialDecision.STOP_FAIL:
        stop = (Verdict.FAIL, "statistical", "rejected")
    elif stat is SequentialDecision.STOP_PASS:
        stop = (Verdict.PASS, "statistical", "consistent")
    elif last:
        stop = (Verdict.INCONCLUSIVE, "statistical", "exhausted")
    look["decision"] = "continue" if stop is None else f"stop_{stop[0].value}"
    look["_stop"] = stop
    return look


def final_verdict(
    stop: tuple[Verdict, str, str] | None,
    totals: Totals,
    interrupted: str,
    opts: CalibrateOptions,
    exact_needed: int,
    planned: int,
) -> tuple[Verdict, str, str]:
    """(verdict, basis, reason in words). Exact evidence is conclusive at any moment, so it is
    also honoured for an interrupted calibration; a statistical verdict needs a completed look."""
    pct = f"{opts.expected_percent:g} %"
    if opts.use_prediction and totals.mismatches:
        return (
            Verdict.FAIL,
            "exact",
            f"{totals.mismatches} of {totals.checked} checked decisions differ from Envoy's rule at {pct}: "
            "the proxy applies another percentage or rule (runtime override, Telemetry, another proxy)",
        )
    if opts.use_prediction and totals.n and totals.checked == totals.n and totals.checked >= exact_needed:
        return (
            Verdict.PASS,
            "exact",
            f"all {totals.checked} decisions match Envoy's rule at {pct} (>= {exact_needed} needed): the "
            f"effective rate is within {points(max_disagreement(totals.checked, opts.confidence))} of the "
            f"rule's with {opts.confidence:.0%} confidence",
        )
    if stop is None:
        return (
            Verdict.INCONCLUSIVE,
            "statistical",
            f"stopped before a conclusion ({interrupted or 'no look'})",
        )
    verdict, basis, why = stop
    if why == "rejected":
        return verdict, basis, f"the exact binomial test rejects {pct} at the look's spent alpha"
    if why == "consistent":
        return (
            verdict,
            basis,
            f"the planned precision is reached and {pct} is inside the Clopper-Pearson interval",
        )
    if totals.n < planned:
        return (
            verdict,
            basis,
            f"the planned precision needs {planned:,} decisions; only {totals.n:,} were made "
            "(request cap or errors), and the exact binomial test does not reject",
        )
    return verdict, basis, f"{pct} is outside the interval but not rejected at the spent alpha"
