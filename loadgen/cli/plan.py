"""`loadgen plan`: how many requests a sampling calibration needs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from loadgen.analysis.planner import (
    DetectionPlan,
    default_precision,
    detection_plan,
    exact_prediction_requests,
    plan_sample_size,
)
from loadgen.cli.console import fatal, out

Expect = Annotated[
    float, typer.Option("--expect", help="The configured sampling percent, e.g. 1.", min=0, max=100)
]
Precision = Annotated[
    float | None,
    typer.Option(
        "--precision",
        help="Wanted ± in percentage points, e.g. 0.1 (default: 10 % of the rarer outcome).",
        min=0,
    ),
]
Confidence = Annotated[float, typer.Option("--confidence", help="Confidence level.", min=0.5, max=0.9999)]
Actual = Annotated[
    float | None,
    typer.Option(
        "--actual", help="Also: requests to catch a proxy really sampling at this percent.", min=0, max=100
    ),
]
Alpha = Annotated[float, typer.Option("--alpha", help="With --actual: false-fail probability of the test.")]
Power = Annotated[float, typer.Option("--power", help="With --actual: probability of catching it.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def plan(
    expect: Expect,
    precision: Precision = None,
    confidence: Confidence = 0.95,
    actual: Actual = None,
    alpha: Alpha = 0.001,
    power: Power = 0.95,
    as_json: AsJson = False,
) -> None:
    """How many decision-free requests a sampling calibration needs: for a ± interval around the
    measured rate (Wald, Wilson, Clopper-Pearson), and, with --actual, to catch a proxy sampling at
    A % while configured with P % (statistics vs exact x-request-id prediction)."""
    fraction = expect / 100.0
    if not 0.0 < fraction < 1.0:
        fatal("--expect must be strictly between 0 and 100 (at 0 or 100 every decision is the same)")
    prec = precision / 100.0 if precision is not None else default_precision(fraction)
    try:
        sample = plan_sample_size(fraction, prec, confidence)
        exact = exact_prediction_requests(prec, confidence)
        detect = detection_plan(expect, actual, alpha, power) if actual is not None else None
    except ValueError as exc:
        fatal(str(exc))
    if as_json:
        doc = {
            "sample": {**sample.__dict__},
            "exact_prediction_requests": exact,
            "detection": detect.to_dict() if detect else None,
        }
        out.print_json(json.dumps(doc))
        return
    out.print(
        f"{expect:g} % ± {prec * 100:g} points at {confidence:.0%} confidence needs "
        f"{sample.clopper_pearson:,} decision-free requests (Clopper-Pearson, exact; Wilson {sample.wilson:,}, "
        f"normal approximation {sample.wald:,})."
    )
    out.print(
        f"With every decision checked against Envoy's x-request-id rule: {exact:,} agreeing decisions bound the "
        f"effective rate within ± {prec * 100:g} points of the rule at {confidence:.0%}."
    )
    if detect is not None:
        _print_detection(detect)


def _print_detection(detect: DetectionPlan) -> None:
    stat = f"{detect.statistical_n:,}" if detect.statistical_n else "never (same rule)"
    ex = f"{detect.exact_n:,}" if detect.exact_n else "never (same rule)"
    out.print(
        f"To catch a proxy at {detect.actual_percent:g} % told {detect.expected_percent:g} % "
        f"(power {detect.power:.0%}): statistics {stat} requests (exact binomial test, alpha {detect.alpha:g}); "
        f"exact prediction {ex} requests "
        f"(each disagrees with probability {detect.mismatch_probability:.4f})."
    )
