"""How many requests a sampling calibration needs, and when it may stop early (pure, stdlib only).

Three questions, one module:

1. **Precision** (`plan_sample_size`): how many decision-free requests until the interval around
   the measured sampling rate is no wider than ±E? Three answers, from the textbook formula to the
   exact interval loadgen reports:
     - Wald (normal approximation), closed form ``n = ceil(z² p (1-p) / E²)``;
     - Wilson (Wilson 1927) and Clopper-Pearson (Clopper & Pearson 1934): the smallest n whose
       interval, computed at the expected outcome ``k = round(p n)``, has half-width <= E.
   *Half-width* here is ``max(p̂ - low, high - p̂)`` with ``p̂ = k / n``: the interval lies inside
   ``[p̂ - E, p̂ + E]``. Both intervals are skewed away from 0 and 1, so this is stricter than
   ``(high - low) / 2`` for small p (about 10 % more requests at p = 1 %) and never below Wald
   there. Because k is an integer, the half-width is a saw-tooth in n (it jumps up when
   ``round(p n)`` steps); the planned n is the smallest n from which it *stays* <= E, so any larger
   run keeps the precision and the plan is monotone in E.
2. **Detection** (`detection_plan`): how many requests until a proxy sampling at `actual` % is told
   apart from the `expected` % it was configured with — by statistics (the exact two-sided
   binomial test at `alpha`, with probability `power`) and by exact prediction (Envoy's decision
   is a function of the x-request-id, so one request whose decision differs from the rule at the
   expected percentage proves the proxy applies something else).
3. **Early stopping** (`sequential_plan`, `sequential_decision`): a group-sequential rule with
   pre-planned looks. Each look tests H0 "rate = expected" with the exact two-sided binomial test
   at its own level ``alpha_i``; the levels come from an alpha-spending function of the power
   family ``alpha(t) = alpha t^rho`` (Lan & DeMets 1983; Kim & DeMets 1987; rho = 1 is
   Pocock-like, rho = 3 O'Brien-Fleming-like) and sum to alpha. By the Bonferroni (union) bound
   the probability that *any* look rejects a correct proxy is at most ``sum(alpha_i) = alpha``,
   whatever the correlation between looks (Jennison & Turnbull 2000, ch. 7, use the exact joint
   distribution to spend alpha exactly; the union bound is conservative and needs no numerics).
   A pass needs the planned precision, i.e. ``n >= n_target``: on statistics alone a correct proxy
   cannot pass early, because at fewer requests the interval is wider than asked for. (Early
   passes come from exact prediction: `exact_prediction_requests`.)

References: E. B. Wilson, JASA 22 (1927) 209-212; C. J. Clopper & E. S. Pearson, Biometrika 26
(1934) 404-413; K. K. G. Lan & D. L. DeMets, Biometrika 70 (1983) 659-663; K. Kim & D. L. DeMets,
Biometrika 74 (1987) 149-154; C. Jennison & B. W. Turnbull, Group Sequential Methods with
Applications to Clinical Trials, Chapman & Hall/CRC 2000; M. R. Chernick & C. Y. Liu, The
saw-toothed behavior of power versus sample size, The American Statistician 56 (2002) 149-155.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from loadgen.analysis.stats import (
    FAIL_ALPHA,
    Verdict,
    binom_cdf,
    binom_test_two_sided,
    clopper_pearson_interval,
    sampling_verdict,
    wilson_interval,
    z_for,
)
from loadgen.mesh.rule import sampling_threshold

DEFAULT_CONFIDENCE = 0.95
DEFAULT_POWER = 0.95
DEFAULT_LOOKS = 10
# Plans beyond this are refused: a billion requests is not a calibration anyone will run.
MAX_PLANNED_REQUESTS = 1_000_000_000
# Float noise guard for closed forms that are integers in exact arithmetic (ceil(38031.000000001)).
_CEIL_SLACK = 1e-9


def _ceil(x: float) -> int:
    return math.ceil(x - _CEIL_SLACK * max(1.0, abs(x)))


def _check_fraction(name: str, value: float, *, open_low: bool = False, open_high: bool = False) -> None:
    low_ok = value > 0.0 if open_low else value >= 0.0
    high_ok = value < 1.0 if open_high else value <= 1.0
    if not (low_ok and high_ok):  # also rejects NaN
        raise ValueError(
            f"{name} must be a fraction in {'(' if open_low else '['}0, 1{')' if open_high else ']'}, got {value}"
        )


# --- Envoy's rule --------------------------------------------------------------------------------


def envoy_threshold(percent: float) -> int:
    """T in Envoy's rule ``sampled <=> int(xrid[0:8], 16) % 10000 < T``: the exact float expression
    of `ProtobufPercentHelper::convertPercent` (`loadgen.mesh.rule.sampling_threshold`, range-checked),
    so 0.29 % gives 28, not 29 (shared/ENVOY-NOTES.md)."""
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent must be in [0, 100], got {percent}")
    return sampling_threshold(percent)


def rule_fraction(percent: float) -> float:
    """The sampling rate Envoy's rule implies for a configured percentage: T / 10000."""
    return envoy_threshold(percent) / 10000.0


# --- precision ---------------------------------------------------------------------------------


def half_width(k: int, n: int, interval: tuple[float, float]) -> float:
    """``max(p̂ - low, high - p̂)``: how far the interval reaches from the estimate k/n."""
    p_hat = k / n
    low, high = interval
    return max(p_hat - low, high - p_hat)


def expected_successes(p: float, n: int) -> int:
    """k = round(p n), ties rounded towards n/2 (so the plan is symmetric in p <-> 1 - p)."""
    if p <= 0.5:
        return math.floor(p * n + 0.5)
    return n - math.floor((1.0 - p) * n + 0.5)


def wald_sample_size(p: float, precision: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """n = ceil(z² p (1-p) / E²), at least 1. (It gives 1 at p in {0, 1}, where Wald is useless.)"""
    _check_fraction("expected fraction", p)
    _check_fraction("precision", precision, open_low=True, open_high=True)
    z = z_for(confidence)
    return max(1, _ceil(z * z * p * (1.0 - p) / (precision * precision)))


def _first_true(pred: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """Smallest n in [lo, hi] with pred(n), for pred false-then-true on that range; None if none."""
    if lo > hi or not pred(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _grow_until(pred: Callable[[int], bool], start: int, limit: int) -> tuple[int, int]:
    """Exponential search: (last index known false or start-1, first power-of-two step that is true)."""
    lo, hi = start - 1, max(start, 1)
    while not pred(hi):
        if hi >= limit:
            raise ValueError(f"more than {limit:,} requests would be needed; relax the precision")
        lo, hi = hi, min(limit, hi * 2)
    return lo, hi


def _stable_sample_size(p: float, precision: float, hw: Callable[[int, int], float]) -> int:
    """Smallest n from which ``hw(round(p n), n) <= E`` holds for every larger n.

    With q = min(p, 1-p), the minority count j(n) = floor(q n + 1/2) is a staircase; on a block of
    constant j the half-width falls with n, and from one block start to the next it falls too
    (both checked against a brute-force scan in tests/unit/test_planner.py). So: find the first
    block whose start satisfies it (then every later n does), then the first n in the block before
    it from which the rest of that block does."""
    q = min(p, 1.0 - p)

    def at(n: int) -> bool:
        return hw(expected_successes(p, n), n) <= precision

    if q == 0.0:  # one block: k = 0 (or n) for every n
        lo, hi = _grow_until(at, 1, MAX_PLANNED_REQUESTS)
        found = _first_true(at, max(1, lo + 1), hi)
        assert found is not None
        return found

    def minority(n: int) -> int:
        return math.floor(q * n + 0.5)

    def block_start(j: int) -> int:
        if j == 0:
            return 1
        n = max(1, math.ceil((j - 0.5) / q))
        while n > 1 and minority(n - 1) >= j:
            n -= 1
        while minority(n) < j:
            n += 1
        return n

    max_block = minority(MAX_PLANNED_REQUESTS)
    lo, hi = _grow_until(lambda j: at(block_start(j)), 0, max_block)
    j_star = _first_true(lambda j: at(block_start(j)), max(0, lo + 1), hi)
    assert j_star is not None
    if j_star == 0:
        return 1
    tail = _first_true(at, block_start(j_star - 1), block_start(j_star) - 1)
    return tail if tail is not None else block_start(j_star)


def wilson_sample_size(p: float, precision: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Smallest n from which the Wilson interval at k = round(p n) stays within ±E of k/n."""
    _check_fraction("expected fraction", p)
    _check_fraction("precision", precision, open_low=True, open_high=True)
    z_for(confidence)
    return _stable_sample_size(p, precision, lambda k, n: half_width(k, n, wilson_interval(k, n, confidence)))


def clopper_pearson_sample_size(p: float, precision: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Smallest n from which the Clopper-Pearson interval at k = round(p n) stays within ±E of k/n."""
    _check_fraction("expected fraction", p)
    _check_fraction("precision", precision, open_low=True, open_high=True)
    z_for(confidence)
    return _stable_sample_size(
        p, precision, lambda k, n: half_width(k, n, clopper_pearson_interval(k, n, confidence))
    )


@dataclass(frozen=True)
class SamplePlan:
    """Decision-free requests needed for a ±precision interval at `confidence`, three ways.

    `n` is the Clopper-Pearson figure: exact and conservative, what `loadgen calibrate` runs."""

    expected_fraction: float
    precision: float
    confidence: float
    wald: int
    wilson: int
    clopper_pearson: int

    @property
    def n(self) -> int:
        return self.clopper_pearson

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n}


def plan_sample_size(
    expected_fraction: float, precision: float, confidence: float = DEFAULT_CONFIDENCE
) -> SamplePlan:
    """How many decision-free requests give an interval of half-width <= `precision` around the
    measured rate, if the proxy samples at `expected_fraction` (fractions, not percent).

    plan_sample_size(0.01, 0.001).wald == 38031 (38032 with the rounded z = 1.96)."""
    return SamplePlan(
        expected_fraction=expected_fraction,
        precision=precision,
        confidence=confidence,
        wald=wald_sample_size(expected_fraction, precision, confidence),
        wilson=wilson_sample_size(expected_fraction, precision, confidence),
        clopper_pearson=clopper_pearson_sample_size(expected_fraction, precision, confidence),
    )


def default_precision(expected_fraction: float) -> float:
    """±10 % of the rarer outcome (1 % -> ±0.1 points, 50 % -> ±5 points), at least ±0.01 points."""
    _check_fraction("expected fraction", expected_fraction)
    return max(0.1 * min(expected_fraction, 1.0 - expected_fraction), 0.0001)


# --- evidence a verdict needs -----------------------------------------------------------------


def all_found_sample_size(threshold: float, confidence: float = DEFAULT_CONFIDENCE) -> int | None:
    """Traces a collection verdict needs before it can pass at `threshold`: the smallest n whose
    all-found sample (k = n) has a Wilson low end >= threshold. That low end is n / (n + z²), so
    n = ceil(threshold z² / (1 - threshold)) (381 at 0.99, 3,838 at 0.999); checked against
    `wilson_interval` itself so float rounding cannot put the verdict and the plan one apart.
    None for a threshold of 1: no sample, however large, shows a rate of 100 %."""
    _check_fraction("threshold", threshold)
    if threshold >= 1.0:
        return None
    z = z_for(confidence)
    n = max(1, _ceil(threshold * z * z / (1.0 - threshold)))
    while n > 1 and wilson_interval(n - 1, n - 1, confidence)[0] >= threshold:
        n -= 1
    while wilson_interval(n, n, confidence)[0] < threshold:
        n += 1
    return n


def detectable_sample_size(expected: float, alpha: float = FAIL_ALPHA) -> int:
    """Decision-free requests the statistical sampling verdict needs before it could fail in
    every direction there is: the smallest n at which both extreme outcomes (none sampled, all
    sampled) fail `loadgen.analysis.stats.sampling_verdict` (outside the Wilson interval and rejected by
    the exact binomial test at `alpha`). Below it a pass is vacuous: no proxy could have failed.
    At alpha 0.001: 11 at 50 % (2 * 0.5^n < alpha), 34 at 20 %, 757 at 1 %; 1 at 0 or 100 %."""
    _check_fraction("expected fraction", expected)

    def can_fail(n: int) -> bool:
        if expected > 0.0 and sampling_verdict(0, n, expected)[0] is not Verdict.FAIL:
            return False
        return not (expected < 1.0 and sampling_verdict(n, n, expected)[0] is not Verdict.FAIL)

    lo, hi = _grow_until(can_fail, 1, MAX_PLANNED_REQUESTS)
    found = _first_true(can_fail, max(1, lo + 1), hi)
    assert found is not None
    return found


# --- exact prediction --------------------------------------------------------------------------


def exact_prediction_requests(precision: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Checked decisions that must all agree with Envoy's rule at the expected percentage before
    a pass is conclusive at ±precision: ceil(log(1 - C) / log(1 - E)).

    If the proxy's decisions disagree with the rule on a fraction q >= E of requests (any other
    percentage, a runtime override, another rule), m agreeing ids in a row have probability
    (1 - q)^m <= 1 - C. And the effective rate differs from the rule's rate by at most q. So zero
    mismatches in m checks bound |effective - rule rate| < E with confidence C."""
    _check_fraction("precision", precision, open_low=True)
    _check_fraction("confidence", confidence, open_low=True, open_high=True)
    if precision >= 1.0:
        return 1
    return max(1, _ceil(math.log(1.0 - confidence) / math.log1p(-precision)))


def max_disagreement(checked: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Upper confidence bound on the disagreement rate after `checked` agreeing decisions:
    1 - (1 - C)^(1/m) (the one-sided Clopper-Pearson bound at 0 of m); 1 when nothing was checked."""
    _check_fraction("confidence", confidence, open_low=True, open_high=True)
    if checked <= 0:
        return 1.0
    return -math.expm1(math.log(1.0 - confidence) / checked)


# --- detection ---------------------------------------------------------------------------------


def rejection_bounds(n: int, expected: float, alpha: float) -> tuple[int, int]:
    """(kL, kU): the exact two-sided binomial test at `alpha` rejects H0 p = expected for k <= kL or
    k >= kU (kL = -1 / kU = n + 1 when a side never rejects). The p-value grows towards the mode
    from either side, so each bound is a binary search."""
    mode = min(n, math.floor((n + 1) * expected))

    def rejects(k: int) -> bool:
        return binom_test_two_sided(k, n, expected) < alpha

    # kL: the largest k in [0, mode] that rejects (rejecting ks form a prefix).
    lo, hi = -1, mode
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if rejects(mid):
            lo = mid
        else:
            hi = mid - 1
    k_low = lo
    k_high = _first_true(rejects, mode, n)
    return k_low, (n + 1 if k_high is None else k_high)


def rejection_power(n: int, expected: float, actual: float, alpha: float) -> float:
    """P(the exact two-sided test at `alpha` rejects p = expected | the rate is `actual`)."""
    k_low, k_high = rejection_bounds(n, expected, alpha)
    low = binom_cdf(k_low, n, actual) if k_low >= 0 else 0.0
    high = 1.0 - binom_cdf(k_high - 1, n, actual) if k_high <= n else 0.0
    return min(1.0, low + high)


def _stable_power_n(
    expected: float, actual: float, alpha: float, power: float, limit: int
) -> tuple[int, float]:
    """Smallest n with power >= target, moved past the saw-tooth (Chernick & Liu 2002): after the
    crossing found by bisection, power must also hold for the next two periods of the tooth
    (2 / min(expected, 1 - expected) sample sizes); a dip there moves n past it."""

    def ok(n: int) -> bool:
        return rejection_power(n, expected, actual, alpha) >= power

    lo, hi = _grow_until(ok, 1, limit)
    n = _first_true(ok, max(1, lo + 1), hi)
    assert n is not None
    window = min(2 * math.ceil(1.0 / max(min(expected, 1.0 - expected), 1e-9)) + 2, 5000)
    m = n + 1
    while m <= n + window:
        if not ok(m):
            n = m + 1
        m += 1
    return n, rejection_power(n, expected, actual, alpha)


@dataclass(frozen=True)
class DetectionPlan:
    """Requests needed to tell a proxy sampling at `actual_percent` from `expected_percent`.

    statistical_n: decision-free requests for the exact two-sided binomial test at `alpha` to
      reject the expected rate with probability >= `power` (None: the rules give the same rate);
    mismatch_probability: the chance per request that the rule at `actual` decides differently
      from the rule at `expected`, |T_expected - T_actual| / 10000;
    exact_n: requests to see at least one such mismatch with probability >= `power`,
      ceil(log(1 - power) / log(1 - q)) (None when q = 0: the two rules are the same rule)."""

    expected_percent: float
    actual_percent: float
    alpha: float
    power: float
    statistical_n: int | None
    statistical_power: float | None
    mismatch_probability: float
    exact_n: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mismatch_requests(q: float, power: float) -> int | None:
    """ceil(log(1 - power) / log(1 - q)): requests to see >= 1 mismatch with probability `power`."""
    if q <= 0.0:
        return None
    if q >= 1.0:
        return 1
    return max(1, _ceil(math.log(1.0 - power) / math.log1p(-q)))


def detection_plan(
    expected_percent: float,
    actual_percent: float,
    alpha: float = FAIL_ALPHA,
    power: float = DEFAULT_POWER,
    *,
    max_requests: int = 100_000_000,
) -> DetectionPlan:
    """How many decision-free requests catch a proxy at `actual_percent` told `expected_percent`
    (percentages, because Envoy's rule truncates the configured percentage: 0.29 -> 28/10000).

    detection_plan(2, 1): statistics need about 3,100 requests; exact prediction 299."""
    _check_fraction("alpha", alpha, open_low=True, open_high=True)
    _check_fraction("power", power, open_low=True, open_high=True)
    t_exp, t_act = envoy_threshold(expected_percent), envoy_threshold(actual_percent)
    q = abs(t_exp - t_act) / 10000.0
    p0, p1 = t_exp / 10000.0, t_act / 10000.0
    stat_n: int | None = None
    stat_power: float | None = None
    if p0 != p1:
        stat_n, stat_power = _stable_power_n(p0, p1, alpha, power, max_requests)
    return DetectionPlan(
        expected_percent=expected_percent,
        actual_percent=actual_percent,
        alpha=alpha,
        power=power,
        statistical_n=stat_n,
        statistical_power=stat_power,
        mismatch_probability=q,
        exact_n=mismatch_requests(q, power),
    )


# --- sequential early stopping -----------------------------------------------------------------


class SequentialDecision(StrEnum):
    CONTINUE = "continue"  # at the last look: the plan is exhausted, the answer is inconclusive
    STOP_PASS = "stop_pass"
    STOP_FAIL = "stop_fail"


@dataclass(frozen=True)
class SequentialPlan:
    """Pre-planned looks at cumulative decision counts `looks`, with the exact-test level
    `alphas[i]` at look i (sum(alphas) == alpha) and the precision a pass needs: `n_target`
    decisions, the sample size that gives ±`precision` at `confidence` for the expected rate."""

    looks: tuple[int, ...]
    alphas: tuple[float, ...]
    alpha: float
    rho: float
    n_target: int
    precision: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "looks": list(self.looks), "alphas": list(self.alphas)}


def spending(t: float, alpha: float, rho: float) -> float:
    """Power-family alpha spending (Kim & DeMets 1987): alpha t^rho for information fraction t."""
    return alpha * float(min(1.0, max(0.0, t)) ** rho)


def sequential_plan(
    n_target: int,
    precision: float,
    confidence: float = DEFAULT_CONFIDENCE,
    *,
    looks: int = DEFAULT_LOOKS,
    alpha: float = FAIL_ALPHA,
    rho: float = 1.0,
    n_max: int | None = None,
) -> SequentialPlan:
    """Looks at every 1/`looks` of `n_max` (default `n_target`): ceil(i n_max / looks).

    `n_max` below `n_target` (a request cap) keeps the looks within the cap; a pass then needs
    the precision the cap cannot buy, so such a plan ends in fail or inconclusive. One look is the
    fixed-sample test at `alpha`."""
    if n_target < 1:
        raise ValueError(f"n_target must be >= 1, got {n_target}")
    if looks < 1:
        raise ValueError(f"looks must be >= 1, got {looks}")
    if not rho > 0.0:
        raise ValueError(f"rho must be > 0, got {rho}")
    _check_fraction("alpha", alpha, open_low=True, open_high=True)
    top = n_target if n_max is None else n_max
    if top < 1:
        raise ValueError(f"n_max must be >= 1, got {top}")
    points = sorted({math.ceil(i * top / looks) for i in range(1, looks + 1)})
    cumulative = [spending(n / top, alpha, rho) for n in points]
    alphas = [cumulative[0]] + [b - a for a, b in zip(cumulative, cumulative[1:], strict=False)]
    return SequentialPlan(
        looks=tuple(points),
        alphas=tuple(alphas),
        alpha=alpha,
        rho=rho,
        n_target=n_target,
        precision=precision,
        confidence=confidence,
    )


def sequential_decision(
    k: int, n: int, expected: float, plan: SequentialPlan, look_index: int
) -> SequentialDecision:
    """The rule at look `look_index` (0-based) with k sampled of n decision-free requests so far:

    stop_fail  the exact two-sided binomial test rejects p = expected at alphas[look_index];
    stop_pass  n >= n_target (the planned precision) and `expected` lies inside the
               Clopper-Pearson interval at the plan's confidence;
    continue   otherwise (at the last look: stop, the answer is inconclusive).

    n may differ a little from looks[look_index] (requests overshoot a stop, some fail): the
    test is exact at whatever n was observed, as long as the look was not chosen from the data."""
    if not 0 <= look_index < len(plan.looks):
        raise ValueError(f"look_index must be in [0, {len(plan.looks) - 1}], got {look_index}")
    _check_fraction("expected", expected)
    if n == 0:
        return SequentialDecision.CONTINUE
    if binom_test_two_sided(k, n, expected) < plan.alphas[look_index]:
        return SequentialDecision.STOP_FAIL
    if n >= plan.n_target:
        low, high = clopper_pearson_interval(k, n, plan.confidence)
        if low <= expected <= high:
            return SequentialDecision.STOP_PASS
    return SequentialDecision.CONTINUE
