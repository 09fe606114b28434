"""The knee (pure): the first step where a bound breaks.

Absolute bounds, on the step alone: p99 latency above the SLO, errors above a fraction, mesh
collection below a fraction, or (steps with a target rate) achieved throughput below a fraction
of the target. Relative bounds, against the other steps: achieved req/s rose by less than
`min_scaling` of the offered increase from the step before ("scaling"), or p99 above
`max_p99_growth` times the first step's p99 ("p99-growth"). Bounds are checked on point
estimates; each rate is reported with its Wilson 95 % interval to judge them.

The offered increase: the difference of the target req/s when both steps have one (rate steps,
users steps with a per-user rate); for closed-loop users steps, what the added users would add at
the step before's req/s per user (2 -> 6 users at 1,559 req/s offer +3,118 req/s)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loadgen.capacity.metrics import StepMetrics
from loadgen.capacity.model import KneeBounds

Breach = tuple[str, str]  # (reason, detail)


@dataclass(frozen=True)
class Knee:
    index: int  # position in the steps list (= the step's index for a full run)
    reason: str  # the first broken bound, in REASONS order
    reasons: tuple[str, ...]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"reasons": list(self.reasons)}


def offered_increase(previous: StepMetrics, step: StepMetrics) -> float | None:
    """The req/s offered on top of the step before (None: not known)."""
    before, now = previous.window.offered_rps, step.window.offered_rps
    if before is not None and now is not None:
        return now - before
    rps = previous.achieved_rps
    if rps is None or previous.requests == 0 or previous.window.users <= 0:
        return None
    return rps * (step.window.users / previous.window.users - 1.0)


def _scaling(step: StepMetrics, previous: StepMetrics | None, share: float) -> Breach | None:
    """Achieved req/s rose by less than `share` of the offered increase (judged only when the
    offer grew and both steps have a rate)."""
    if previous is None:
        return None
    offered = offered_increase(previous, step)
    before, now = previous.achieved_rps, step.achieved_rps
    if offered is None or offered <= 0 or before is None or now is None or previous.requests == 0:
        return None
    if now - before >= share * offered:
        return None
    return (
        "scaling",
        f"req/s {before:.1f} -> {now:.1f} ({now - before:+.1f}): rose by less than {share:.0%} of "
        f"the offered increase (+{offered:.1f} req/s)",
    )


def step_breaches(
    step: StepMetrics,
    bounds: KneeBounds,
    *,
    previous: StepMetrics | None = None,
    first_p99: float | None = None,
) -> list[Breach]:
    """(reason, detail) for every bound the step breaks; a step without requests breaks none
    (nothing to judge), nor does a bound without data (no sampled trace, no target rate, no
    step before, no first p99)."""
    if step.requests == 0:
        return []
    out: list[Breach] = []
    err = step.error_rate
    if bounds.max_error_rate is not None and err.rate is not None and err.rate > bounds.max_error_rate:
        out.append(("errors", f"errors {err.rate:.2%} ({err.k}/{err.n}) > {bounds.max_error_rate:.2%}"))
    if bounds.p99_ms is not None and step.p99_ms is not None and step.p99_ms > bounds.p99_ms:
        out.append(("latency", f"p99 {step.p99_ms:.1f} ms > SLO {bounds.p99_ms:g} ms"))
    col = step.collection
    if bounds.min_collection is not None and col.rate is not None and col.rate < bounds.min_collection:
        low, high = col.ci95
        out.append(
            (
                "collection",
                f"collection {col.rate:.2%} ({col.k}/{col.n}, 95% CI {low:.2%}-{high:.2%}) "
                f"< {bounds.min_collection:.2%}",
            )
        )
    ratio = step.throughput_ratio
    if bounds.min_throughput is not None and ratio is not None and ratio < bounds.min_throughput:
        out.append(
            (
                "throughput",
                f"throughput {ratio:.1%} of the target: achieved {step.achieved_rps:.1f} of "
                f"{step.window.offered_rps:g} req/s < {bounds.min_throughput:.0%}",
            )
        )
    if bounds.min_scaling is not None and (scaling := _scaling(step, previous, bounds.min_scaling)):
        out.append(scaling)
    growth = bounds.max_p99_growth
    if growth is not None and first_p99 and step.p99_ms is not None and step.p99_ms > growth * first_p99:
        out.append(
            ("p99-growth", f"p99 {step.p99_ms:.1f} ms > {growth:g}x the first step's {first_p99:.1f} ms")
        )
    return out


def judged_bounds(
    step: StepMetrics,
    bounds: KneeBounds,
    *,
    previous: StepMetrics | None = None,
    first_p99: float | None = None,
) -> list[str]:
    """The bounds `step_breaches` could judge this step on: set, with data. An empty list means
    the step was not judged at all, which is no evidence that it stayed within the bounds."""
    if step.requests == 0:
        return []
    scaling = False
    if bounds.min_scaling is not None and previous is not None and previous.requests:
        offered = offered_increase(previous, step)
        scaling = bool(offered and offered > 0) and None not in (previous.achieved_rps, step.achieved_rps)
    had_data = {
        "errors": bounds.max_error_rate is not None and step.error_rate.rate is not None,
        "latency": bounds.p99_ms is not None and step.p99_ms is not None,
        "collection": bounds.min_collection is not None and step.collection.rate is not None,
        "throughput": bounds.min_throughput is not None and step.throughput_ratio is not None,
        "scaling": scaling,
        "p99-growth": bounds.max_p99_growth is not None and bool(first_p99) and step.p99_ms is not None,
    }
    return [name for name, judged in had_data.items() if judged]


def _first_p99(steps: Sequence[StepMetrics]) -> float | None:
    return next((s.p99_ms for s in steps if s.requests and s.p99_ms is not None), None)


def breaches_by_step(steps: Sequence[StepMetrics], bounds: KneeBounds) -> list[list[Breach]]:
    """Every step's breaches (pure): each judged with the step before it and the first step's
    p99 (the first step with requests and a p99)."""
    first_p99 = _first_p99(steps)
    return [
        step_breaches(step, bounds, previous=steps[pos - 1] if pos else None, first_p99=first_p99)
        for pos, step in enumerate(steps)
    ]


def judged_by_step(steps: Sequence[StepMetrics], bounds: KneeBounds) -> list[list[str]]:
    """Every step's `judged_bounds`, judged as `breaches_by_step` judges them."""
    first_p99 = _first_p99(steps)
    return [
        judged_bounds(step, bounds, previous=steps[pos - 1] if pos else None, first_p99=first_p99)
        for pos, step in enumerate(steps)
    ]


def find_knee(steps: Sequence[StepMetrics], bounds: KneeBounds) -> Knee | None:
    """The first step where a bound breaks (pure), with every bound it breaks."""
    for pos, broken in enumerate(breaches_by_step(steps, bounds)):
        if broken:
            return Knee(
                index=pos,
                reason=broken[0][0],
                reasons=tuple(r for r, _ in broken),
                detail="; ".join(d for _, d in broken),
            )
    return None
