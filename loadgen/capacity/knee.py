"""The knee (pure): the first step where a bound breaks: p99 latency above the SLO, errors above
a fraction, mesh collection below a fraction, or (steps with a target rate) achieved throughput
below a fraction of the target. Bounds are checked on point estimates; each rate is reported
with its Wilson 95 % interval to judge them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from loadgen.capacity.metrics import StepMetrics
from loadgen.capacity.model import KneeBounds


@dataclass(frozen=True)
class Knee:
    index: int  # position in the steps list (= the step's index for a full run)
    reason: str  # the first broken bound, in REASONS order
    reasons: tuple[str, ...]
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"reasons": list(self.reasons)}


def step_breaches(step: StepMetrics, bounds: KneeBounds) -> list[tuple[str, str]]:
    """(reason, detail) for every bound the step breaks; a step without requests breaks none
    (nothing to judge), nor does a bound without data (no sampled trace, no target rate)."""
    if step.requests == 0:
        return []
    out: list[tuple[str, str]] = []
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
    return out


def find_knee(steps: Sequence[StepMetrics], bounds: KneeBounds) -> Knee | None:
    """The first step where a bound breaks (pure), with every bound it breaks."""
    for pos, step in enumerate(steps):
        broken = step_breaches(step, bounds)
        if broken:
            return Knee(
                index=pos,
                reason=broken[0][0],
                reasons=tuple(r for r, _ in broken),
                detail="; ".join(d for _, d in broken),
            )
    return None
