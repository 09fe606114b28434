"""calibration.json and calibration.md from the calibration's numbers (pure)."""

from __future__ import annotations

from typing import Any

from loadgen.analysis.planner import SamplePlan, SequentialPlan, half_width, max_disagreement
from loadgen.analysis.stats import Verdict, binom_test_two_sided, clopper_pearson_interval, wilson_interval
from loadgen.calibrate.model import CalibrateOptions, Totals, calibration_mix

__all__ = ["calibration_document", "points", "render_calibration_markdown"]


def calibration_document(
    *,
    cal_id: str,
    opts: CalibrateOptions,
    target: dict[str, Any],
    plan: SamplePlan,
    seq: SequentialPlan,
    precision: float,
    threshold: int,
    exact_needed: int,
    totals: Totals,
    first_mismatch_at: int | None,
    looks: list[dict[str, Any]],
    runs: list[str],
    verdict: Verdict,
    basis: str,
    reason: str,
    interrupted: str,
    notes: list[str],
) -> dict[str, Any]:
    """calibration.json (schema_version 1): everything the verdict rests on."""
    k, n = totals.k, totals.n
    conf = opts.confidence
    wilson = list(wilson_interval(k, n, conf))
    cp = clopper_pearson_interval(k, n, conf)
    p = threshold / 10000.0
    return {
        "schema_version": 1,
        "calibration_id": cal_id,
        "status": "partial" if interrupted else "complete",
        "status_reason": interrupted or None,
        "target": target,
        "expected_percent": opts.expected_percent,
        "rule": {"threshold": threshold, "fraction": p},
        "precision": precision,
        "confidence": conf,
        "mix": calibration_mix(opts.crafted_ids),
        "plan": plan.to_dict(),
        "sequential": {"enabled": opts.sequential, **seq.to_dict()},
        "exact_prediction_needed": exact_needed,
        "requests": {"total": totals.requests, "errors": totals.errors},
        "decisions": {
            "k": k,
            "n": n,
            "rate": k / n if n else None,
            "wilson": wilson,
            "clopper_pearson": list(cp),
            "half_width": half_width(k, n, cp) if n else None,
        },
        "p_value": binom_test_two_sided(k, n, p) if n else None,
        "prediction": {
            "used": opts.use_prediction,
            "checked": totals.checked,
            "mismatches": totals.mismatches,
            "examples": totals.examples,
            "first_mismatch_at": first_mismatch_at,
            "sources": dict(totals.sources),
            "all_checked": n > 0 and totals.checked == n,
            "max_disagreement": max_disagreement(totals.checked, conf) if totals.mismatches == 0 else None,
        },
        "looks": looks,
        "stopped_early": bool(looks) and looks[-1]["look"] < len(seq.looks) and not interrupted,
        "verdict": verdict.value,
        "basis": basis,
        "reason": reason,
        "runs": runs,
        "notes": notes,
    }


def _pct(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{100.0 * x:.{digits}f} %"


def points(x: float | None) -> str:
    """A precision in percentage points: 0.001 -> "±0.1 points"."""
    return "–" if x is None else f"±{100.0 * x:.4g} points"


def render_calibration_markdown(doc: dict[str, Any]) -> str:
    """calibration.md from calibration.json (pure)."""
    d = doc["decisions"]
    pred = doc["prediction"]
    plan = doc["plan"]
    seq = doc["sequential"]
    conf = f"{doc['confidence']:.0%}"
    lines = [
        f"# Sampling calibration `{doc['calibration_id']}`",
        "",
        f"**{doc['verdict'].upper()}** ({doc['basis']}): {doc['reason']}.",
        "",
    ]
    if doc["status"] == "partial":
        lines += [f"Partial: {doc['status_reason']}.", ""]
    target = doc.get("target") or {}
    lines += [
        "| | |",
        "|---|---|",
        f"| target | {target.get('kind', '?')} {target.get('gateway', '')} (Host {target.get('host', '')}) |",
        f"| expected | {doc['expected_percent']:g} % (Envoy's rule: {doc['rule']['threshold']}/10000) |",
        f"| precision | {points(doc['precision'])} at {conf} |",
        f"| planned decisions | {plan['n']:,} (Clopper-Pearson); Wilson {plan['wilson']:,}; Wald {plan['wald']:,} |",
        f"| requests | {doc['requests']['total']:,} (errors {doc['requests']['errors']}) |",
        f"| decisions | {d['k']:,} sampled of {d['n']:,}: {_pct(d['rate'])} |",
        f"| Wilson {conf} | [{_pct(d['wilson'][0])}, {_pct(d['wilson'][1])}] |",
        f"| Clopper-Pearson {conf} | [{_pct(d['clopper_pearson'][0])}, {_pct(d['clopper_pearson'][1])}] "
        f"(reaches {points(d['half_width'])}) |",
        f"| exact binomial test vs {doc['rule']['fraction']:.2%} | "
        + (
            "–"
            if doc["p_value"] is None
            else f"p = {doc['p_value']:.3g} (fixed-sample, not adjusted for looks)"
        )
        + " |",
        "| exact prediction | "
        + (
            f"{pred['checked']:,} checked, {pred['mismatches']:,} mismatch(es)"
            + (f", first at decision #{pred['first_mismatch_at']}" if pred["first_mismatch_at"] else "")
            + (
                f" ({pred['sources']['crafted']:,} predicted before sending from our x-request-id)"
                if (pred.get("sources") or {}).get("crafted")
                else ""
            )
            + f"; {doc['exact_prediction_needed']:,} agreeing needed for {points(doc['precision'])}"
            if pred["used"]
            else "not used"
        )
        + " |",
        f"| stopping rule | {len(seq['looks'])} look(s), alpha {seq['alpha']:g} spent as alpha·t^{seq['rho']:g}"
        + (", stopped early" if doc["stopped_early"] else "")
        + " |",
        "",
        "## Looks",
        "",
        "| look | planned | decisions | sampled | p-value | alpha | statistics | decision | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for look in doc["looks"]:
        pv = look["p_value"]
        lines.append(
            f"| {look['look']} | {look['planned']:,} | {look['decisions']['n']:,} | {look['decisions']['k']:,} "
            f"| {'–' if pv is None else f'{pv:.3g}'} | {look['alpha']:.3g} | {look['statistical']} "
            f"| {look['decision']} | {', '.join(look.get('runs', []))} |"
        )
    if doc["notes"]:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in doc["notes"]]
    lines += [
        "",
        "Each run folder (`look01/`, ...) holds its own ledger, summary.json and report.md.",
        "",
    ]
    return "\n".join(lines)
