"""loadgen.analysis.stats against closed forms, explicit sums (math.comb / fractions) and SciPy.

SciPy is only a test oracle here (the package itself is stdlib-only)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import special as sp_special
from scipy import stats as sp_stats

from loadgen.analysis.stats import (
    FAIL_ALPHA,
    Proportion,
    Verdict,
    betainc,
    binom_cdf,
    binom_test_two_sided,
    clopper_pearson_interval,
    percentile,
    sampling_verdict,
    wilson_interval,
    z_for,
)

Z95 = float(sp_stats.norm.ppf(0.975))


def exact_pmf(j: int, n: int, p: Fraction) -> Fraction:
    return math.comb(n, j) * p**j * (1 - p) ** (n - j)


def seeded_grid(seed: int, count: int, n_max: int = 200_000) -> list[tuple[int, int, float]]:
    """(k, n, p) with n log-uniform in [1, n_max], k near n*p, uniform, or exactly 0 / n."""
    rng = random.Random(seed)
    cases: list[tuple[int, int, float]] = []
    for _ in range(count):
        n = int(math.exp(rng.uniform(0.0, math.log(n_max))))
        p = rng.choice([0.01, 0.001, 0.1, 0.5, 0.9, 0.0029, rng.random()])
        r = rng.random()
        if r < 0.15:
            k = 0
        elif r < 0.3:
            k = n
        elif r < 0.75:
            k = min(n, max(0, round(rng.gauss(n * p, 3 * math.sqrt(n * p * (1 - p)) + 1))))
        else:
            k = rng.randint(0, n)
        cases.append((k, n, p))
    cases += [
        (0, n_max, 0.01),
        (n_max, n_max, 0.01),
        (2000, n_max, 0.01),
        (2100, n_max, 0.01),
        (1880, n_max, 0.01),
    ]
    return cases


GRID = seeded_grid(20261127, 120)


# --- Wilson --------------------------------------------------------------------------------------


def wilson_by_formula(k: int, n: int, z: float) -> tuple[float, float]:
    """Wilson (1927): (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.mark.parametrize(
    ("k", "n"), [(1, 10), (5, 10), (7, 10), (20, 1000), (2013, 10000), (3, 7), (99, 100)]
)
def test_wilson_matches_its_formula(k: int, n: int) -> None:
    low, high = wilson_interval(k, n)
    want_low, want_high = wilson_by_formula(k, n, Z95)
    assert low == pytest.approx(want_low, abs=1e-12)
    assert high == pytest.approx(want_high, abs=1e-12)


def test_wilson_other_confidence_uses_the_matching_quantile() -> None:
    z99 = float(sp_stats.norm.ppf(0.995))
    low, high = wilson_interval(30, 200, confidence=0.99)
    want = wilson_by_formula(30, 200, z99)
    assert (low, high) == pytest.approx(want, abs=1e-12)
    assert z_for(0.95) == pytest.approx(Z95, abs=1e-9)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and high == pytest.approx(Z95**2 / (50 + Z95**2), abs=1e-12)  # k=0: z²/(n+z²)
    low, high = wilson_interval(50, 50)
    assert high == 1.0 and low == pytest.approx(50 / (50 + Z95**2), abs=1e-12)  # k=n: n/(n+z²)


@given(n=st.integers(1, 100_000), data=st.data())
def test_wilson_contains_the_estimate_and_nests(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, n))
    low95, high95 = wilson_interval(k, n, 0.95)
    low99, high99 = wilson_interval(k, n, 0.99)
    assert 0.0 <= low95 <= k / n <= high95 <= 1.0
    assert low99 <= low95 + 1e-15 and high95 <= high99 + 1e-15


# --- Clopper-Pearson -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 10, 37, 1000, 200_000])
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_clopper_pearson_closed_forms_at_k_0_and_k_n(n: int, confidence: float) -> None:
    alpha = 1.0 - confidence
    low, high = clopper_pearson_interval(0, n, confidence)
    assert low == 0.0
    assert high == pytest.approx(1.0 - (alpha / 2.0) ** (1.0 / n), rel=1e-9)
    low, high = clopper_pearson_interval(n, n, confidence)
    assert high == 1.0
    assert low == pytest.approx((alpha / 2.0) ** (1.0 / n), rel=1e-9)


@pytest.mark.parametrize(("k", "n"), [(1, 4), (3, 10), (7, 12), (10, 30), (29, 30)])
def test_clopper_pearson_bounds_put_alpha_over_2_in_each_tail(k: int, n: int) -> None:
    """Definition: P(X >= k | p_low) = alpha/2 and P(X <= k | p_high) = alpha/2 (explicit sums)."""
    low, high = clopper_pearson_interval(k, n, 0.95)

    def pmf(j: int, p: float) -> float:
        return math.comb(n, j) * p**j * (1 - p) ** (n - j)

    assert sum(pmf(j, low) for j in range(k, n + 1)) == pytest.approx(0.025, abs=1e-10)
    assert sum(pmf(j, high) for j in range(0, k + 1)) == pytest.approx(0.025, abs=1e-10)


def test_clopper_pearson_with_nothing_observed_is_the_whole_range() -> None:
    assert clopper_pearson_interval(0, 0) == (0.0, 1.0)


# --- binomial cdf, incomplete beta ---------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 13, 40])
@pytest.mark.parametrize("p", [0.01, 0.1, 0.37, 0.5, 0.93])
def test_binom_cdf_equals_explicit_sum(n: int, p: float) -> None:
    pf = Fraction(p)
    for k in range(-1, n + 2):
        want = float(sum((exact_pmf(j, n, pf) for j in range(0, min(k, n) + 1)), Fraction(0)))
        assert binom_cdf(k, n, p) == pytest.approx(want, rel=1e-10, abs=1e-15), (k, n, p)


def test_binom_cdf_degenerate_p() -> None:
    assert binom_cdf(0, 10, 0.0) == 1.0
    assert binom_cdf(9, 10, 1.0) == 0.0
    assert binom_cdf(10, 10, 1.0) == 1.0
    assert binom_cdf(-1, 10, 0.5) == 0.0


@given(x=st.floats(0.0, 1.0), a=st.floats(0.5, 50.0))
def test_betainc_closed_forms(x: float, a: float) -> None:
    assert betainc(1.0, 1.0, x) == pytest.approx(x, abs=1e-12)
    assert betainc(a, 1.0, x) == pytest.approx(x**a, abs=1e-12)
    assert betainc(1.0, a, x) == pytest.approx(1.0 - (1.0 - x) ** a, abs=1e-12)


def test_betainc_against_scipy_on_a_seeded_grid() -> None:
    rng = random.Random(11)
    for _ in range(400):
        a = math.exp(rng.uniform(math.log(0.5), math.log(200_000)))
        b = math.exp(rng.uniform(math.log(0.5), math.log(200_000)))
        # x near the mean a/(a+b), where the function is neither 0 nor 1
        mean = a / (a + b)
        x = min(max(rng.gauss(mean, 3 * math.sqrt(mean * (1 - mean) / (a + b + 1))), 1e-12), 1 - 1e-12)
        assert betainc(a, b, x) == pytest.approx(float(sp_special.betainc(a, b, x)), rel=1e-8, abs=1e-14), (
            a,
            b,
            x,
        )


# --- exact two-sided binomial test ---------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 9, 10, 25, 60])
def test_binom_test_symmetric_case_is_twice_the_smaller_tail(n: int) -> None:
    half = Fraction(1, 2)
    for k in range(n + 1):
        lower = sum((exact_pmf(j, n, half) for j in range(0, k + 1)), Fraction(0))
        upper = sum((exact_pmf(j, n, half) for j in range(k, n + 1)), Fraction(0))
        want = min(1.0, float(2 * min(lower, upper)))
        assert binom_test_two_sided(k, n, 0.5) == pytest.approx(want, rel=1e-9, abs=1e-300), (k, n)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binom_test_equals_the_definition_by_enumeration(seed: int) -> None:
    """p-value = sum of pmf(j) over outcomes j no more likely than k (exact rationals)."""
    rng = random.Random(seed)
    for _ in range(25):
        n = rng.randint(1, 60)
        p = round(rng.uniform(0.02, 0.98), 3)
        k = rng.randint(0, n)
        pf = Fraction(p).limit_denominator(1000)
        pmfs = [exact_pmf(j, n, pf) for j in range(n + 1)]
        # SciPy's tie tolerance (1 + 1e-7) is far below any pmf ratio at these n; ties are exact.
        want = float(sum((q for q in pmfs if q <= pmfs[k]), Fraction(0)))
        assert binom_test_two_sided(k, n, float(pf)) == pytest.approx(min(1.0, want), rel=1e-9), (k, n, p)


@pytest.mark.parametrize(
    ("k", "n", "p", "want"),
    [
        (10, 10, 0.01, 0.01**10),  # only k=10 is as unlikely as k=10: p-value = pmf(10) = 1e-20
        (0, 60, 0.5, 2.0 * 0.5**60),  # symmetric: both extreme outcomes
        (60, 60, 0.5, 2.0 * 0.5**60),
        (6, 6, 0.01, 0.01**6),
    ],
)
def test_binom_test_tiny_p_values_keep_relative_precision(k: int, n: int, p: float, want: float) -> None:
    """Closed forms. A p-value is never 0 for 0 < p < 1; the upper tail must not be computed as
    1 - cdf, which cancels to 0 (or loses half the value) below ~1e-16."""
    assert binom_test_two_sided(k, n, p) == pytest.approx(want, rel=1e-9, abs=0.0)


def test_binom_test_degenerate_p_and_empty() -> None:
    assert binom_test_two_sided(0, 0, 0.3) == 1.0
    assert binom_test_two_sided(0, 10, 0.0) == 1.0
    assert binom_test_two_sided(1, 10, 0.0) == 0.0
    assert binom_test_two_sided(10, 10, 1.0) == 1.0
    assert binom_test_two_sided(9, 10, 1.0) == 0.0


# --- against SciPy on a seeded grid (n up to 200000, k = 0 and k = n included) -------------------


def test_grid_covers_the_edges() -> None:
    assert any(k == 0 for k, _, _ in GRID) and any(k == n for k, n, _ in GRID)
    assert max(n for _, n, _ in GRID) == 200_000


@pytest.mark.parametrize(("k", "n", "p"), GRID)
def test_against_scipy(k: int, n: int, p: float) -> None:
    ref = sp_stats.binomtest(k, n, p)
    want_p = float(ref.pvalue)
    assert binom_test_two_sided(k, n, p) == pytest.approx(want_p, rel=1e-6, abs=1e-12)
    exact = ref.proportion_ci(confidence_level=0.95, method="exact")
    assert clopper_pearson_interval(k, n) == pytest.approx((exact.low, exact.high), abs=1e-9)
    wilson = ref.proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((wilson.low, wilson.high), abs=1e-12)
    assert binom_cdf(k, n, p) == pytest.approx(float(sp_stats.binom.cdf(k, n, p)), rel=1e-8, abs=1e-14)


# --- invalid input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(-1, 10), (11, 10), (0, -1), (1, 0)])
def test_bad_counts_raise(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(k, n)
    with pytest.raises(ValueError):
        clopper_pearson_interval(k, n)
    with pytest.raises(ValueError):
        binom_test_two_sided(k, n, 0.5)


@pytest.mark.parametrize("p", [-0.1, 1.1, math.nan])
def test_bad_probability_raises(p: float) -> None:
    with pytest.raises(ValueError):
        binom_test_two_sided(3, 10, p)
    with pytest.raises(ValueError):
        sampling_verdict(3, 10, p)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1, math.nan])
def test_wilson_bad_confidence_raises(confidence: float) -> None:
    with pytest.raises(ValueError):
        wilson_interval(3, 10, confidence)


@pytest.mark.parametrize("confidence", [1.5, -0.1, math.nan])
def test_clopper_pearson_bad_confidence_raises(confidence: float) -> None:
    with pytest.raises(ValueError):
        clopper_pearson_interval(3, 10, confidence)


# --- sampling verdict ----------------------------------------------------------------------------


def scipy_verdict(k: int, n: int, expected: float) -> Verdict:
    """The documented rule, computed with SciPy: pass inside the 95 % Wilson interval, fail when the
    exact two-sided p-value < 0.001, else inconclusive."""
    ref = sp_stats.binomtest(k, n, expected)
    ci = ref.proportion_ci(0.95, method="wilson")
    if ci.low - 1e-12 <= expected <= ci.high + 1e-12:
        return Verdict.PASS
    return Verdict.FAIL if ref.pvalue < FAIL_ALPHA else Verdict.INCONCLUSIVE


def test_sampling_verdict_nothing_observed_is_inconclusive() -> None:
    assert sampling_verdict(0, 0, 0.01) == (Verdict.INCONCLUSIVE, 1.0)


def test_sampling_verdict_three_ways_at_one_percent() -> None:
    n, expected = 10_000, 0.01
    verdict, pval = sampling_verdict(100, n, expected)
    assert verdict is Verdict.PASS and pval == pytest.approx(1.0)
    # Find, with SciPy, the first k above the rate whose Wilson interval excludes 1 % and the first
    # whose exact p-value falls under 0.001: in between the evidence is weak -> inconclusive.
    outside = next(
        k for k in range(100, 300) if sp_stats.binomtest(k, n).proportion_ci(method="wilson").low > expected
    )
    strong = next(k for k in range(100, 300) if sp_stats.binomtest(k, n, expected).pvalue < FAIL_ALPHA)
    assert outside < strong
    assert sampling_verdict(outside - 1, n, expected)[0] is Verdict.PASS
    assert sampling_verdict(outside, n, expected)[0] is Verdict.INCONCLUSIVE
    assert sampling_verdict(strong - 1, n, expected)[0] is Verdict.INCONCLUSIVE
    verdict, pval = sampling_verdict(strong, n, expected)
    assert verdict is Verdict.FAIL and pval < FAIL_ALPHA


def test_sampling_verdict_zero_percent() -> None:
    assert sampling_verdict(0, 500, 0.0)[0] is Verdict.PASS
    assert sampling_verdict(1, 500, 0.0) == (Verdict.FAIL, 0.0)
    assert sampling_verdict(500, 500, 1.0)[0] is Verdict.PASS


@pytest.mark.parametrize(("k", "n", "p"), seeded_grid(99, 80, n_max=50_000))
def test_sampling_verdict_matches_the_rule_computed_with_scipy(k: int, n: int, p: float) -> None:
    verdict, pval = sampling_verdict(k, n, p)
    assert verdict is scipy_verdict(k, n, p)
    assert pval == pytest.approx(float(sp_stats.binomtest(k, n, p).pvalue), rel=1e-6, abs=1e-12)


def test_sampling_verdict_false_fail_rate_is_small_under_the_null() -> None:
    """A proxy that samples at exactly the configured rate is (almost) never called wrong."""
    rng = np.random.default_rng(5)
    n, expected = 2000, 0.05
    draws = rng.binomial(n, expected, size=400)
    verdicts = [sampling_verdict(int(k), n, expected)[0] for k in draws]
    assert verdicts.count(Verdict.FAIL) <= 2  # expected 0.4 at alpha = 0.001
    assert verdicts.count(Verdict.PASS) >= 360  # ~95 % coverage of the Wilson interval


# --- percentile, Proportion ----------------------------------------------------------------------


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=60), st.floats(0.0, 100.0))
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    values.sort()
    want = float(np.percentile(np.array(values), q, method="linear"))
    assert percentile(values, q) == pytest.approx(want, rel=1e-9, abs=1e-6)


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_proportion() -> None:
    prop = Proportion(7, 20)
    assert prop.rate == 7 / 20
    assert prop.ci95 == wilson_interval(7, 20)
    assert prop.to_dict() == {"k": 7, "n": 20, "rate": 0.35, "ci95": list(wilson_interval(7, 20))}
    empty = Proportion(0, 0)
    assert empty.rate is None and empty.to_dict() == {"k": 0, "n": 0, "rate": None, "ci95": [0.0, 1.0]}
