"""loadgen.analysis.planner against closed forms, brute-force scans and SciPy (a test oracle only).

The sequential rule's type-I error is measured by seeded simulation: the union bound promises
at most alpha, so the observed false-fail fraction must stay below alpha plus a binomial margin."""

from __future__ import annotations

import math
import random
from functools import cache

import numpy as np
import pytest
from scipy import stats as sp_stats

from loadgen.analysis.planner import (
    DetectionPlan,
    SequentialDecision,
    SequentialPlan,
    all_found_sample_size,
    clopper_pearson_sample_size,
    default_precision,
    detectable_sample_size,
    detection_plan,
    envoy_threshold,
    exact_prediction_requests,
    expected_successes,
    half_width,
    max_disagreement,
    mismatch_requests,
    plan_sample_size,
    rejection_bounds,
    rejection_power,
    rule_fraction,
    sequential_decision,
    sequential_plan,
    wald_sample_size,
    wilson_sample_size,
)
from loadgen.analysis.stats import clopper_pearson_interval, wilson_interval
from loadgen.mesh.rule import envoy_random_sampled, sampling_threshold

Z95 = float(sp_stats.norm.ppf(0.975))


def scipy_cp_half_width(k: int, n: int, confidence: float) -> float:
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(sp_stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(sp_stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return max(k / n - low, high - k / n)


def wilson_half_width(k: int, n: int, confidence: float) -> float:
    """Wilson's interval from its textbook formula (independent of loadgen.analysis.stats)."""
    z = float(sp_stats.norm.ppf(0.5 + confidence / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if k == 0 else centre - half
    high = 1.0 if k == n else centre + half
    return max(p - low, high - p)


# --- precision ---------------------------------------------------------------------------------


def test_wald_is_the_closed_form_38031_for_one_percent_at_a_tenth_of_a_point() -> None:
    """z² p(1-p)/E² = 38030.44 with the exact z (1.959964); the often-quoted 38,032 uses z = 1.96."""
    plan = plan_sample_size(0.01, 0.001, 0.95)
    assert plan.wald == math.ceil(Z95**2 * 0.01 * 0.99 / 0.001**2) == 38031
    assert math.ceil(1.96**2 * 0.01 * 0.99 / 0.001**2) == 38032
    assert plan.n == plan.clopper_pearson


@pytest.mark.parametrize(
    ("p", "e", "c"),
    [(0.5, 0.05, 0.95), (0.2, 0.02, 0.95), (0.01, 0.001, 0.99), (0.3, 0.1, 0.9), (0.999, 0.0005, 0.95)],
)
def test_wald_matches_the_formula(p: float, e: float, c: float) -> None:
    z = float(sp_stats.norm.ppf(0.5 + c / 2))
    assert wald_sample_size(p, e, c) == math.ceil(z * z * p * (1 - p) / (e * e) - 1e-9)


def test_exact_outcome_ends_have_closed_forms() -> None:
    """At p = 0 every plan has k = 0: CP's upper end is 1 - (alpha/2)^(1/n) and Wilson's z²/(n+z²),
    so the plans are ceil(log(alpha/2)/log(1-E)) and ceil(z²(1-E)/E); p = 1 mirrors p = 0."""
    for e in (0.001, 0.01, 0.05):
        cp = math.ceil(math.log(0.025) / math.log(1 - e))
        wilson = math.ceil(Z95**2 * (1 - e) / e)
        assert clopper_pearson_sample_size(0.0, e) == cp == clopper_pearson_sample_size(1.0, e)
        assert wilson_sample_size(0.0, e) == wilson == wilson_sample_size(1.0, e)


def test_estimators_at_k_zero_and_k_n() -> None:
    """half_width reaches from the estimate: at k = 0 it is the upper end, at k = n 1 - lower end."""
    for n in (1, 10, 1000):
        low, high = clopper_pearson_interval(0, n)
        assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / n))
        assert half_width(0, n, (low, high)) == high
        low, high = clopper_pearson_interval(n, n)
        assert high == 1.0 and half_width(n, n, (low, high)) == pytest.approx(1 - low)
        assert half_width(0, n, wilson_interval(0, n)) == pytest.approx(Z95**2 / (n + Z95**2))


@pytest.mark.parametrize("p", [0.001, 0.01, 0.05, 0.1])
def test_wilson_and_cp_need_at_least_wald_for_small_p(p: float) -> None:
    for e in (p / 2, p / 5, p / 10):
        plan = plan_sample_size(p, e)
        assert plan.wilson >= plan.wald
        assert plan.clopper_pearson >= plan.wald


@pytest.mark.parametrize("p", [0.0, 0.01, 0.2, 0.5, 0.7, 0.99])
def test_plans_grow_as_the_precision_tightens(p: float) -> None:
    precisions = [0.1, 0.05, 0.03, 0.02, 0.01, 0.005]
    for size in (wilson_sample_size, clopper_pearson_sample_size, wald_sample_size):
        ns = [size(p, e) for e in precisions]
        assert ns == sorted(ns), (size.__name__, p, ns)


def _stable_brute_force(p: float, e: float, c: float, hw: object, n_max: int) -> int:
    """Smallest n from which hw(round(p n), n) <= E holds up to n_max, by scanning every n."""
    assert callable(hw)
    last_bad = 0
    for n in range(1, n_max + 1):
        if hw(expected_successes(p, n), n, c) > e:
            last_bad = n
    return last_bad + 1


@pytest.mark.parametrize(
    ("p", "e", "c"),
    [
        (0.05, 0.05, 0.95),
        (0.2, 0.08, 0.95),
        (0.5, 0.1, 0.9),
        (0.63, 0.08, 0.99),
        (0.9, 0.05, 0.95),
        (0.01, 0.03, 0.95),
    ],
)
def test_plans_are_the_smallest_n_from_which_the_half_width_stays_within_precision(
    p: float, e: float, c: float
) -> None:
    """The saw-tooth: a scan of every n up to 3x the plan finds the same n (SciPy's beta
    quantiles for CP, the textbook formula for Wilson), and n - 1 is too wide."""
    n_cp = clopper_pearson_sample_size(p, e, c)
    assert _stable_brute_force(p, e, c, scipy_cp_half_width, 3 * n_cp + 50) == n_cp
    n_w = wilson_sample_size(p, e, c)
    assert _stable_brute_force(p, e, c, wilson_half_width, 3 * n_w + 50) == n_w


def test_the_38k_plan_reaches_its_precision_and_one_less_does_not() -> None:
    plan = plan_sample_size(0.01, 0.001)
    n = plan.clopper_pearson
    assert scipy_cp_half_width(expected_successes(0.01, n), n, 0.95) <= 0.001
    assert scipy_cp_half_width(expected_successes(0.01, n - 1), n - 1, 0.95) > 0.001
    # Skewed intervals reach further up than down: about 10 % more than Wald at 1 %.
    assert 1.05 * plan.wald < plan.clopper_pearson < 1.15 * plan.wald


def test_default_precision_is_a_tenth_of_the_rarer_outcome() -> None:
    assert default_precision(0.01) == pytest.approx(0.001)
    assert default_precision(0.5) == pytest.approx(0.05)
    assert default_precision(0.99) == pytest.approx(0.001)
    assert default_precision(0.0) == 0.0001


@pytest.mark.parametrize(
    ("p", "e", "c"), [(-0.1, 0.01, 0.95), (0.5, 0.0, 0.95), (0.5, 1.0, 0.95), (0.5, 0.1, 1.0)]
)
def test_bad_inputs_are_refused(p: float, e: float, c: float) -> None:
    with pytest.raises(ValueError):
        plan_sample_size(p, e, c)


def test_absurd_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="relax the precision"):
        clopper_pearson_sample_size(0.5, 1e-6)


# --- Envoy's rule and exact prediction ---------------------------------------------------------


def test_envoy_threshold_is_the_rule_of_propagation() -> None:
    rng = random.Random(7)
    for pct in (0.0, 0.29, 1.0, 12.34, 20.0, 99.99, 100.0):
        t = envoy_threshold(pct)
        for _ in range(300):
            xrid = f"{rng.getrandbits(32):08x}-0000-4000-8000-000000000000"
            assert envoy_random_sampled(xrid, pct) == (int(xrid[:8], 16) % 10000 < t)
    assert envoy_threshold(0.29) == 28  # truncated, as Envoy does
    assert all(envoy_threshold(pct) == sampling_threshold(pct) for pct in (0.29, 33.33, 12.34, 1.0, 100.0))
    assert rule_fraction(20.0) == 0.2


def test_exact_prediction_requests_is_the_zero_mismatch_bound() -> None:
    for e, c in ((0.02, 0.95), (0.001, 0.95), (0.01, 0.99)):
        m = exact_prediction_requests(e, c)
        assert m == math.ceil(math.log(1 - c) / math.log(1 - e))
        assert (1 - e) ** m <= 1 - c < (1 - e) ** (m - 1)
        assert max_disagreement(m, c) <= e < max_disagreement(m - 1, c)
        # The one-sided CP upper bound at 0 of m, from SciPy.
        assert max_disagreement(m, c) == pytest.approx(float(sp_stats.beta.ppf(c, 1, m)))
    assert exact_prediction_requests(0.02) == 149
    assert max_disagreement(0) == 1.0


# --- detection ---------------------------------------------------------------------------------


def scipy_power(n: int, p0: float, p1: float, alpha: float) -> float:
    ks = np.arange(n + 1)
    reject = np.array([sp_stats.binomtest(int(k), n, p0).pvalue < alpha for k in ks])
    return float(sp_stats.binom.pmf(ks[reject], n, p1).sum())


@pytest.mark.parametrize(("n", "p0"), [(50, 0.2), (400, 0.02), (1000, 0.5), (3000, 0.01)])
def test_rejection_bounds_match_scipys_binomtest(n: int, p0: float) -> None:
    k_low, k_high = rejection_bounds(n, p0, 0.001)
    pvalues = [sp_stats.binomtest(k, n, p0).pvalue for k in range(n + 1)]
    rejected = {k for k, pv in enumerate(pvalues) if pv < 0.001}
    assert rejected == set(range(0, k_low + 1)) | set(range(k_high, n + 1))


def test_one_percent_told_two_percent_statistics_vs_exact_prediction() -> None:
    """The gateway samples 1 % while the mesh is configured with 2 %: the statistical test needs
    thousands of decision-free requests, exact prediction a few hundred (closed form)."""
    plan = detection_plan(2.0, 1.0, alpha=0.001, power=0.95)
    assert isinstance(plan, DetectionPlan)
    assert plan.mismatch_probability == 0.01  # |200 - 100| / 10000
    assert plan.exact_n == math.ceil(math.log(0.05) / math.log(0.99)) == 299
    assert plan.statistical_n is not None and plan.statistical_power is not None
    n = plan.statistical_n
    # The normal approximation (z_{a/2} sqrt(p0 q0) + z_b sqrt(p1 q1))² / d² is ~3,900.
    approx = (
        sp_stats.norm.ppf(1 - 0.0005) * math.sqrt(0.02 * 0.98)
        + sp_stats.norm.ppf(0.95) * math.sqrt(0.01 * 0.99)
    ) ** 2 / 0.01**2
    assert 0.85 * approx < n < 1.1 * approx
    assert n > 10 * plan.exact_n
    assert scipy_power(n, 0.02, 0.01, 0.001) == pytest.approx(plan.statistical_power, abs=1e-9)
    assert plan.statistical_power >= 0.95
    assert scipy_power(n - 1, 0.02, 0.01, 0.001) < 0.95


def test_detection_n_is_past_the_saw_tooth() -> None:
    plan = detection_plan(20.0, 10.0)
    assert plan.statistical_n is not None
    n = plan.statistical_n
    assert rejection_power(n - 1, 0.2, 0.1, 0.001) < 0.95
    assert all(rejection_power(m, 0.2, 0.1, 0.001) >= 0.95 for m in range(n, n + 40))
    assert plan.exact_n == mismatch_requests(0.1, 0.95) == 29


def test_detection_of_identical_rules_is_impossible() -> None:
    plan = detection_plan(0.29, 0.285)  # both truncate to 28/10000
    assert plan.mismatch_probability == 0.0
    assert plan.exact_n is None and plan.statistical_n is None
    assert detection_plan(0.0, 100.0).exact_n == 1


# --- sequential early stopping -----------------------------------------------------------------


def test_sequential_plan_spends_exactly_alpha() -> None:
    plan = sequential_plan(1671, 0.02, looks=10, alpha=0.001)
    assert plan.looks[-1] == 1671 and list(plan.looks) == sorted(set(plan.looks)) and len(plan.looks) == 10
    assert math.fsum(plan.alphas) == pytest.approx(0.001, rel=1e-12)
    assert all(a > 0 for a in plan.alphas)
    obf = sequential_plan(1000, 0.02, looks=4, alpha=0.01, rho=3.0)
    assert obf.alphas[0] == pytest.approx(0.01 / 64) and obf.alphas[0] < obf.alphas[-1]
    single = sequential_plan(500, 0.02, looks=1, alpha=0.001)
    assert single.looks == (500,) and single.alphas == (0.001,)
    capped = sequential_plan(1000, 0.02, looks=5, n_max=200)
    assert capped.looks == (40, 80, 120, 160, 200) and capped.n_target == 1000


def test_sequential_decision_fails_a_far_off_rate_and_passes_only_at_the_planned_precision() -> None:
    plan = sequential_plan(1600, 0.02, looks=10, alpha=0.001)
    assert sequential_decision(12, 160, 0.2, plan, 0) is SequentialDecision.STOP_FAIL
    # Exactly on target but short of the planned precision: no pass yet.
    assert sequential_decision(32, 160, 0.2, plan, 0) is SequentialDecision.CONTINUE
    assert sequential_decision(320, 1600, 0.2, plan, 9) is SequentialDecision.STOP_PASS
    # Outside the 95 % interval but not rejected at the last look's alpha: inconclusive.
    assert sequential_decision(355, 1600, 0.2, plan, 9) is SequentialDecision.CONTINUE
    assert sequential_decision(0, 0, 0.2, plan, 0) is SequentialDecision.CONTINUE
    with pytest.raises(ValueError):
        sequential_decision(1, 10, 0.2, plan, 10)


def _simulate_false_fails(plan: SequentialPlan, p: float, paths: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    sizes = np.diff(np.array((0, *plan.looks)))
    ks = rng.binomial(sizes, p, size=(paths, len(sizes))).cumsum(axis=1)

    @cache
    def decide(k: int, look: int) -> SequentialDecision:
        return sequential_decision(k, plan.looks[look], p, plan, look)

    fails = 0
    for row in ks:
        for look, k in enumerate(row):
            d = decide(int(k), look)
            if d is not SequentialDecision.CONTINUE:
                fails += int(d is SequentialDecision.STOP_FAIL)
                break
    return fails


def _binomial_ceiling(paths: int, rate: float) -> int:
    """A count a Binomial(paths, rate) exceeds with probability < 1e-6."""
    return int(sp_stats.binom.ppf(1 - 1e-6, paths, rate))


@pytest.mark.parametrize(("p", "alpha", "rho"), [(0.2, 0.05, 1.0), (0.01, 0.05, 1.0), (0.5, 0.05, 3.0)])
def test_sequential_rule_type_one_error_is_at_most_alpha(p: float, alpha: float, rho: float) -> None:
    """A correct proxy, ten looks: the fraction of simulated calibrations that fail is at most
    alpha (plus a 1e-6 binomial margin). alpha = 0.05 here so that the rate is measurable."""
    e = max(p / 5, 0.02)
    plan = sequential_plan(plan_sample_size(p, e).n, e, looks=10, alpha=alpha, rho=rho)
    paths = 20_000
    fails = _simulate_false_fails(plan, p, paths, seed=20260101)
    assert fails <= _binomial_ceiling(paths, alpha), fails / paths


def test_sequential_rule_at_the_default_alpha_almost_never_fails_a_correct_proxy() -> None:
    plan = sequential_plan(plan_sample_size(0.2, 0.02).n, 0.02, looks=10)
    paths = 20_000
    assert _simulate_false_fails(plan, 0.2, paths, seed=7) <= _binomial_ceiling(paths, 0.001)


def test_testing_every_look_at_full_alpha_would_not_be_valid() -> None:
    """Why alpha is spent: the same ten looks each at the full 0.05 fail a correct proxy far more
    often than 5 % (Armitage, McPherson & Rowe 1969)."""
    base = sequential_plan(400, 0.05, looks=10, alpha=0.05)
    naive = SequentialPlan(base.looks, (0.05,) * 10, 0.5, 1.0, base.n_target, base.precision, base.confidence)
    paths = 20_000
    fails = _simulate_false_fails(naive, 0.5, paths, seed=11)
    assert fails / paths > 0.08


# --- evidence a verdict needs ---------------------------------------------------------------------


def scipy_wilson(k: int, n: int) -> tuple[float, float]:
    ci = sp_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


@pytest.mark.parametrize("threshold", [0.5, 0.9, 0.95, 0.99, 0.995])
def test_all_found_sample_size_is_the_first_all_found_sample_whose_wilson_low_end_reaches_it(
    threshold: float,
) -> None:
    n = all_found_sample_size(threshold)
    assert n is not None
    # brute force with SciPy's Wilson interval: n passes, n - 1 does not
    assert scipy_wilson(n, n)[0] >= threshold
    assert n == 1 or scipy_wilson(n - 1, n - 1)[0] < threshold
    # and the textbook closed form: the all-found low end is n / (n + z²)
    assert n == math.ceil(threshold * Z95**2 / (1 - threshold))


def test_all_found_sample_size_at_the_default_minimum_and_at_one() -> None:
    # 0.99 * 1.959964² / 0.01 = 380.3: 381 traces; 200 all found are not enough (low 0.981)
    assert all_found_sample_size(0.99) == 381
    assert scipy_wilson(200, 200)[0] < 0.99
    assert all_found_sample_size(1.0) is None  # no sample shows 100 %
    with pytest.raises(ValueError):
        all_found_sample_size(1.5)


def _fails_scipy(k: int, n: int, p: float) -> bool:
    low, high = scipy_wilson(k, n)
    return not (low <= p <= high) and sp_stats.binomtest(k, n, p).pvalue < 0.001


@pytest.mark.parametrize("p", [0.5, 0.2, 0.05, 0.8])
def test_detectable_sample_size_is_the_first_n_at_which_both_extremes_fail(p: float) -> None:
    n = detectable_sample_size(p)
    assert _fails_scipy(0, n, p) and _fails_scipy(n, n, p)
    assert not (_fails_scipy(0, n - 1, p) and _fails_scipy(n - 1, n - 1, p))


def test_detectable_sample_size_at_half_is_the_binomial_tail() -> None:
    # at 50 % both extremes have p-value 2 * 0.5^n: below 0.001 from n = 11 (2 / 2048 < 0.001 <
    # 2 / 1024); Wilson excludes 0.5 much earlier (n >= 4)
    assert detectable_sample_size(0.5) == 11
    # at 0 % or 100 % one decision the other way fails: one is enough
    assert detectable_sample_size(0.0) == 1 and detectable_sample_size(1.0) == 1
