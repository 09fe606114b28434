"""Sampled read-back: which trace ids a read-back queries when it does not query them all (pure).

A run's trace ids fall in two strata, each sampled uniformly at random without replacement:

- the ledger's decided-sampled traces: what the collection rate is measured on;
- the ledger's other traces (decided not sampled, or no decision seen): the leak check.

Reference traces are always all queried (the reference rate is the user's choice, and small).
The draw is seeded by the run id and the stratum, so `loadgen verify` of the same run with the
same rule asks the same traces again.

Why the collection interval stays honest: each decided-sampled trace is collected or not by
the same process, independently with probability θ; a uniform sample of those traces, chosen
without looking at any outcome, is itself a sample of independent draws of θ. The Wilson
interval of the queried sample therefore covers θ as a full read-back's does, only wider (its
n is the sample's). For the run's own realised fraction (a finite population) it is
conservative: the finite-population correction would only narrow it, and is not applied. The
same holds for the leak check's count of leaked traces among those queried.

Traces outside the sample are *not queried*: never unknown (the backend was not asked), never
missing, and in no rate's denominator.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The automatic choice: a backend that cannot fetch many ids in one request (Tempo, Jaeger's
#: api_v3) and more than AUTO_MIN_IDS ids to query: at most AUTO_COUNT per stratum. 10,000
#: sampled traces put a collection rate near 0.99 within about ±0.002 (Wilson, 95 %).
AUTO_MIN_IDS = 20_000
AUTO_COUNT = 10_000


@dataclass(frozen=True)
class SampleRule:
    """How many ids of each stratum to query: at most `count`, or `fraction` of them."""

    count: int | None = None
    fraction: float | None = None
    automatic: bool = False  # chosen by loadgen, not asked for

    def __post_init__(self) -> None:
        if (self.count is None) == (self.fraction is None):
            raise ValueError("a sample rule is a count or a fraction")
        if self.count is not None and self.count < 1:
            raise ValueError(f"a read-back sample needs at least 1 trace, got {self.count}")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"a read-back fraction is in (0, 1], got {self.fraction}")

    def size(self, n: int) -> int:
        """How many of a stratum of `n` ids are queried (at least one of a non-empty stratum)."""
        if self.count is not None:
            return min(self.count, n)
        assert self.fraction is not None
        return min(n, max(1, math.ceil(self.fraction * n))) if n else 0

    def describe(self) -> str:
        """The rule as the report says it, e.g. `--readback-sample 10000`."""
        what = (
            f"--readback-sample {self.count}"
            if self.count is not None
            else f"--readback-fraction {self.fraction:g}"
        )
        return f"automatic ({what.removeprefix('--readback-')})" if self.automatic else what


def choose_rule(count: int | None, fraction: float | None, *, ids: int, multi_get: bool) -> SampleRule | None:
    """The rule a read-back of `ids` trace ids follows (None: query them all): the one asked for
    (`--readback-fraction 1` asks for all), else the automatic one for a backend without
    multi-get and a large run."""
    if count is not None and fraction is not None:
        raise ValueError("give --readback-sample or --readback-fraction, not both")
    if count is not None:
        return SampleRule(count=count)
    if fraction is not None:
        return None if fraction == 1.0 else SampleRule(fraction=fraction)
    if not multi_get and ids > AUTO_MIN_IDS:
        return SampleRule(count=AUTO_COUNT, automatic=True)
    return None


@dataclass(frozen=True)
class Stratum:
    queried: int
    of: int


@dataclass(frozen=True)
class SamplePlan:
    """The ids a sampled read-back skips, and what summary.json says of the sample."""

    rule: SampleRule
    sampled: Stratum  # decided-sampled ledger traces
    other: Stratum  # the ledger's other traces (the leak check)
    skipped: frozenset[str]

    def to_json(self) -> dict[str, Any]:
        """summary.json's `readback.sample`."""
        return {
            "rule": "count" if self.rule.count is not None else "fraction",
            "count": self.rule.count,
            "fraction": self.rule.fraction,
            "automatic": self.rule.automatic,
            "sampled": {"queried": self.sampled.queried, "of": self.sampled.of},
            "others": {"queried": self.other.queried, "of": self.other.of},
        }

    def note(self) -> str:
        """The read-back note that says what was queried and how the intervals account for it."""
        return (
            f"sampled read-back ({self.rule.describe()}): queried a uniform random sample of "
            f"{self.sampled.queried:,} of {self.sampled.of:,} decided-sampled traces and "
            f"{self.other.queried:,} of {self.other.of:,} others (the leak check); the rest are "
            "'not queried', never unknown or missing, and the collection interval is the Wilson "
            "interval of the queried sample"
        )


def draw(ids: Sequence[str], k: int, seed: str) -> list[str]:
    """`k` of `ids`, uniformly without replacement, the same for the same ids, order and seed."""
    return random.Random(seed).sample(list(ids), k) if k < len(ids) else list(ids)


def plan_sample(
    expected: Mapping[str, int], reference_ids: Collection[str], rule: SampleRule, seed: str
) -> SamplePlan:
    """Which ids of `expected` (trace id -> spans a complete trace holds; 0: none expected) the
    read-back skips under `rule`: ledger ids only (`reference_ids` are always queried), the
    decided-sampled ones (expected > 0) and the others drawn apart, seeded by `seed`."""
    sampled = [t for t, spans in expected.items() if spans and t not in reference_ids]
    other = [t for t, spans in expected.items() if not spans and t not in reference_ids]
    skipped: set[str] = set()
    strata = []
    for name, ids in (("sampled", sampled), ("other", other)):
        kept = set(draw(ids, rule.size(len(ids)), f"{seed}:{name}"))
        skipped.update(t for t in ids if t not in kept)
        strata.append(Stratum(len(kept), len(ids)))
    return SamplePlan(rule, strata[0], strata[1], frozenset(skipped))
