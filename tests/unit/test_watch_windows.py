"""loadgen.watch.windows: `--window` parsing, the rolling-window figures from buckets, and the
time-to-queryable quantiles.

Expected intervals come from the Wilson score interval's defining equation, solved as a quadratic
with numpy.roots (|p̂ - p| = z·sqrt(p(1-p)/n)), and from published values; quantiles are worked
out by hand from the bucket bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from loadgen.watch.model import TTQ_BUCKETS_S, Histogram, Source
from loadgen.watch.windows import (
    OUTCOMES,
    Bucket,
    histogram_quantile,
    interval,
    parse_windows,
    window_stats,
)

MESH, REF = Source.MESH, Source.REFERENCE


def wilson_by_quadratic(k: int, n: int) -> tuple[float, float]:
    """Roots in p of (p̂ - p)² = z² p (1 - p) / n, i.e. (1 + z²/n) p² - (2p̂ + z²/n) p + p̂² = 0."""
    z = float(sp_stats.norm.ppf(0.975))
    phat = k / n
    a, b, c = 1 + z * z / n, -(2 * phat + z * z / n), phat * phat
    roots = sorted(float(r.real) for r in np.roots([a, b, c]))
    return roots[0], roots[1]


# --- parse_windows ------------------------------------------------------------------------------


def test_default_windows_are_labelled_in_seconds() -> None:
    assert parse_windows("5m,1h") == (("300s", 300.0), ("3600s", 3600.0))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30", (("30s", 30.0),)),
        ("10s, 2m", (("10s", 10.0), ("120s", 120.0))),
        ("1d", (("86400s", 86400.0),)),
        ("0.5s", (("0.5s", 0.5),)),
        ("0.1m", (("6s", 6.0),)),
        ("1h,5m", (("3600s", 3600.0), ("300s", 300.0))),  # the order written
        ("1.5h", (("5400s", 5400.0),)),
    ],
)
def test_units_and_plain_seconds(text: str, expected: tuple[tuple[str, float], ...]) -> None:
    assert parse_windows(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no window given"),
        ("  ", "no window given"),
        ("5m,,1h", "empty window"),
        ("5m,", "empty window"),
        ("0", "longer than 0"),
        ("0s", "longer than 0"),
        ("-5m", "longer than 0"),
        ("nan", "not a finite duration"),
        ("inf", "not a finite duration"),
        ("-inf", "not a finite duration"),
        ("1e400s", "not a finite duration"),
        ("5m,300s", "repeats '5m'"),
        ("60,1m", "repeats '60'"),
        ("5x", "unit s, m, h or d"),
        ("five", "unit s, m, h or d"),
        ("xs", "'x' is not a number"),
    ],
)
def test_bad_windows_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_windows(text)


# --- interval -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(1, 1), (3, 7), (19, 100), (500, 1000), (999, 1000), (2, 5000)])
def test_interval_matches_the_wilson_equation(k: int, n: int) -> None:
    got = interval(k, n)
    low, high = wilson_by_quadratic(k, n)
    assert got.k == k and got.n == n
    assert got.ratio == pytest.approx(k / n)
    assert got.lower == pytest.approx(low, abs=1e-12)
    assert got.upper == pytest.approx(high, abs=1e-12)


def test_interval_published_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662.
    got = interval(81, 263)
    assert (round(got.lower or -1, 4), round(got.upper or -1, 4)) == (0.2553, 0.3662)
    # 0/20 -> 0 to 0.1611 (same table).
    got = interval(0, 20)
    assert got.lower == 0.0 and round(got.upper or -1, 4) == 0.1611


def test_nothing_measured_is_none_not_zero() -> None:
    got = interval(0, 0)
    assert (got.k, got.n, got.ratio, got.lower, got.upper) == (0, 0, None, None, None)
    with pytest.raises(ValueError):
        interval(1, 0)
    with pytest.raises(ValueError):
        interval(5, 3)


# --- window_stats -------------------------------------------------------------------------------


def _buckets() -> list[Bucket]:
    """Six 10 s buckets starting at t = 1000 .. 1050."""
    return [
        Bucket(1000.0, decided=100, sampled=10, outcomes={(MESH, "found"): 9, (MESH, "missing"): 1}),
        Bucket(1010.0, decided=50, sampled=5, outcomes={(MESH, "found"): 4, (REF, "found"): 10}),
        Bucket(1020.0, decided=40, sampled=20, outcomes={(MESH, "partial"): 2, (MESH, "unknown"): 7}),
        Bucket(1030.0, decided=10, sampled=0, outcomes={(REF, "missing"): 1, (MESH, "leaked"): 1}),
        Bucket(1040.0, decided=0, sampled=0, outcomes={(MESH, "not_sampled"): 3, (REF, "found"): 4}),
        Bucket(1050.0, decided=20, sampled=2, outcomes={(MESH, "found"): 5}),
    ]


def test_window_sums_the_buckets_that_started_inside_it() -> None:
    # now = 1055, window 30 s: buckets starting in [1025, 1055] -> 1030, 1040, 1050.
    stats = window_stats(_buckets(), now=1055.0, window_s=30.0, label="30s")
    assert stats.label == "30s" and stats.window_s == 30.0
    assert (stats.decision.k, stats.decision.n) == (2, 30)
    assert stats.decision.ratio == pytest.approx(2 / 30)
    mesh = stats.collection[MESH]
    assert mesh.outcomes == {
        "found": 5,
        "partial": 0,
        "missing": 0,
        "leaked": 1,
        "not_sampled": 3,
        "unknown": 0,
    }
    assert (mesh.collection.k, mesh.collection.n) == (5, 5)
    ref = stats.collection[REF]
    assert (ref.outcomes["found"], ref.outcomes["missing"]) == (4, 1)
    assert (ref.collection.k, ref.collection.n) == (4, 5)
    low, high = wilson_by_quadratic(4, 5)
    assert ref.collection.lower == pytest.approx(low) and ref.collection.upper == pytest.approx(high)


def test_window_edges() -> None:
    buckets = _buckets()
    # A bucket starting exactly at now - window_s is inside; one a hair earlier is not.
    at_edge = window_stats(buckets, now=1050.0, window_s=20.0, label="20s")
    assert at_edge.decision.n == 10 + 0 + 20  # 1030, 1040, 1050
    past_edge = window_stats(buckets, now=1050.5, window_s=20.0, label="20s")
    assert past_edge.decision.n == 0 + 20  # 1040, 1050
    # Buckets that start after `now` (clock skew, a later bucket already open) are left out.
    early = window_stats(buckets, now=1015.0, window_s=3600.0, label="3600s")
    assert (early.decision.k, early.decision.n) == (15, 150)
    # The whole history: unknown, leaked and not_sampled are not in the collection ratio.
    everything = window_stats(buckets, now=1059.0, window_s=3600.0, label="3600s")
    mesh = everything.collection[MESH]
    assert (mesh.collection.k, mesh.collection.n) == (9 + 4 + 5, 9 + 1 + 4 + 2 + 5)
    assert mesh.outcomes["unknown"] == 7 and mesh.outcomes["leaked"] == 1
    assert (everything.decision.k, everything.decision.n) == (37, 220)


def test_empty_window_has_no_ratio_but_keeps_its_counts() -> None:
    # Only unknown outcomes (the backend was away): counted, yet no collection ratio.
    buckets = [Bucket(2000.0, outcomes={(MESH, "unknown"): 12})]
    stats = window_stats(buckets, now=2005.0, window_s=300.0, label="300s")
    assert stats.decision.ratio is None and stats.decision.lower is None and stats.decision.upper is None
    mesh = stats.collection[MESH]
    assert mesh.outcomes["unknown"] == 12
    assert mesh.collection.ratio is None and mesh.collection.n == 0
    assert set(stats.collection) == {MESH, REF}
    assert stats.collection[REF].outcomes == dict.fromkeys(OUTCOMES, 0)
    nothing = window_stats([], now=0.0, window_s=1.0, label="1s")
    assert nothing.decision.ratio is None and nothing.collection[REF].collection.ratio is None


def test_window_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="positive"):
        window_stats([], now=0.0, window_s=0.0, label="0s")
    with pytest.raises(ValueError, match="positive"):
        window_stats([], now=0.0, window_s=math.nan, label="nan")
    with pytest.raises(ValueError):  # more sampled than decided
        window_stats([Bucket(0.0, decided=1, sampled=2)], now=1.0, window_s=10.0, label="10s")


# --- histogram_quantile -------------------------------------------------------------------------


def _hist(per_bucket: dict[float, int], above: int = 0, sum_s: float = 0.0) -> Histogram:
    """A cumulative histogram from counts per finite upper bound plus those above the last one."""
    cumulative, running = [], 0
    for bound in TTQ_BUCKETS_S:
        running += per_bucket.get(bound, 0)
        cumulative.append(running)
    cumulative.append(running + above)
    return Histogram(bucket_counts=tuple(cumulative), sum_s=sum_s, count=running + above)


def test_quantiles_interpolate_within_the_bucket() -> None:
    # 10 in (0.25, 0.5], 20 in (0.5, 1.0]: p50 = rank 15 -> 0.5 + 0.5 * 5/20 = 0.625,
    # p99 = rank 29.7 -> 0.5 + 0.5 * 19.7/20 = 0.9925, p20 = rank 6 -> 0.25 + 0.25 * 6/10 = 0.4.
    hist = _hist({0.5: 10, 1.0: 20})
    assert histogram_quantile(hist, 0.5) == pytest.approx(0.625)
    assert histogram_quantile(hist, 0.99) == pytest.approx(0.9925)
    assert histogram_quantile(hist, 0.2) == pytest.approx(0.4)
    assert histogram_quantile(hist, 1.0) == pytest.approx(1.0)
    # Everything in the first bucket: it starts at 0 -> p50 = 0.125.
    assert histogram_quantile(_hist({0.25: 4}), 0.5) == pytest.approx(0.125)


def test_quantile_beyond_the_last_bound_is_infinite_and_empty_is_none() -> None:
    hist = _hist({2.0: 90}, above=10)
    assert histogram_quantile(hist, 0.5) == pytest.approx(1.0 + 1.0 * 50 / 90)
    assert histogram_quantile(hist, 0.99) == math.inf
    assert histogram_quantile(_hist({}), 0.5) is None


def test_quantile_rejects_malformed_histograms() -> None:
    with pytest.raises(ValueError, match="bucket counts"):
        histogram_quantile(Histogram(bucket_counts=(1, 2), sum_s=0.0, count=2), 0.5)
    bad = list(_hist({1.0: 5}).bucket_counts)
    bad[3] = 1  # drops below the bucket before it
    with pytest.raises(ValueError, match="cumulative"):
        histogram_quantile(Histogram(bucket_counts=tuple(bad), sum_s=0.0, count=5), 0.5)
    with pytest.raises(ValueError, match="quantile"):
        histogram_quantile(_hist({1.0: 5}), 1.5)
