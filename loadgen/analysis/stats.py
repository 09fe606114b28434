"""Binomial estimators, exact tests and the sampling verdict (pure, stdlib only).

Every rate loadgen reports is k successes out of n trials with an interval:
- Wilson score interval (Wilson 1927) — the default `ci95`, good coverage even for small n;
- Clopper-Pearson (exact, conservative) from the regularized incomplete beta function;
- an exact two-sided binomial test (sum of outcomes no more likely than the observed one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist


def z_for(confidence: float) -> float:
    """Two-sided normal quantile: 0.95 -> 1.959964."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials; (0, 1) when n == 0 (nothing known)."""
    _check_counts(k, n)
    if n == 0:
        return (0.0, 1.0)
    z = z_for(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp float noise; the exact ends are 0 when k == 0 and 1 when k == n.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


def _check_counts(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return betainc(n - k, k + 1, 1.0 - p)


def _upper_tail(j: int, n: int, p: float) -> float:
    """P(X >= j) = I_p(j, n - j + 1), computed directly: 1 - cdf cancels for tiny tails."""
    if j <= 0:
        return 1.0
    if j > n:
        return 0.0
    return betainc(j, n - j + 1, p)


def binom_logpmf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if k == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if k == n else -math.inf
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


def _beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of betainc in x by bisection (monotone; 100 halvings reach float precision)."""
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval: quantiles of Beta(k, n-k+1) and Beta(k+1, n-k)."""
    _check_counts(k, n)
    z_for(confidence)  # validates 0 < confidence < 1 (NaN included)
    if n == 0:
        return (0.0, 1.0)
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else _beta_ppf(alpha / 2.0, k, n - k + 1)
    high = 1.0 if k == n else _beta_ppf(1.0 - alpha / 2.0, k + 1, n - k)
    return (low, high)


def binom_test_two_sided(k: int, n: int, p: float) -> float:
    """Exact two-sided binomial test p-value: the probability of outcomes no more likely than k.

    The pmf is unimodal, so the outcomes on the other side of the mode that are no more likely
    than k form a tail found by bisection; both tails come from the beta function (O(log n))."""
    _check_counts(k, n)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if n == 0:
        return 1.0
    if p in (0.0, 1.0):
        return 1.0 if k == round(p * n) else 0.0
    relerr = 1.0 + 1e-7  # same tolerance as SciPy for ties
    d = binom_logpmf(k, n, p) + math.log(relerr)
    mode = math.floor((n + 1) * p)
    if k == mode or binom_logpmf(mode, n, p) <= d:
        return 1.0
    if k < mode:
        # Smallest j >= mode with pmf(j) <= pmf(k): the upper tail starts there.
        lo, hi = mode, n + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if binom_logpmf(mid, n, p) <= d:
                hi = mid
            else:
                lo = mid + 1
        upper = _upper_tail(lo, n, p)
        pval = binom_cdf(k, n, p) + upper
    else:
        # Largest j <= mode with pmf(j) <= pmf(k): the lower tail ends there.
        lo, hi = -1, mode
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if binom_logpmf(mid, n, p) <= d:
                lo = mid
            else:
                hi = mid - 1
        lower = binom_cdf(lo, n, p) if lo >= 0 else 0.0
        pval = lower + _upper_tail(k, n, p)
    return min(1.0, max(0.0, pval))


@dataclass(frozen=True)
class Proportion:
    """k of n with its 95 % Wilson interval; `rate` is None when n == 0."""

    k: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n, 0.95)

    def to_dict(self) -> dict[str, object]:
        low, high = self.ci95
        return {"k": self.k, "n": self.n, "rate": self.rate, "ci95": [low, high]}


@dataclass
class Tally:
    """k of n, counted as they come: a `Proportion` once done."""

    k: int = 0
    n: int = 0

    def add(self, hit: bool, n: int = 1) -> None:
        self.n += n
        self.k += n if hit else 0

    def proportion(self) -> Proportion:
        return Proportion(self.k, self.n)


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


# A fail needs strong evidence: a correct proxy is called wrong at most 0.1 % of the time.
FAIL_ALPHA = 0.001


def sampling_verdict(k: int, n: int, expected: float) -> tuple[Verdict, float]:
    """Compare an observed decision rate with the configured fraction.

    pass: the configured value lies inside the 95 % Wilson interval;
    fail: the exact two-sided binomial test rejects it at FAIL_ALPHA (0.1 %);
    inconclusive: neither (weak evidence) or nothing observed (n == 0).
    Returns (verdict, p-value)."""
    if n == 0:
        return Verdict.INCONCLUSIVE, 1.0
    pval = binom_test_two_sided(k, n, expected)
    low, high = wilson_interval(k, n, 0.95)
    if low <= expected <= high:
        return Verdict.PASS, pval
    if pval < FAIL_ALPHA:
        return Verdict.FAIL, pval
    return Verdict.INCONCLUSIVE, pval


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted values; None if empty."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
