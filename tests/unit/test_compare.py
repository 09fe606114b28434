"""A run compared with a baseline (issue 13, item 7): "different" needs significance AND a
practical threshold per measure, a quantity measured at a resolution never differs by less than
it, and each row says which rule decided. Every expected p-value below is worked out by hand
(z = Δ / sqrt(p̂(1-p̂)(1/n1 + 1/n2)), p = erfc(|z|/√2); Fisher from binomial coefficients)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from loadgen.analysis.stats import Proportion
from loadgen.report.compare import (
    answered_latencies,
    compare_summaries,
    fisher_exact_p,
    quantile_test_p,
    render_comparison_markdown,
    two_proportion_p,
)
from loadgen.report.html import render_html
from loadgen.report.html.comparison import comparison_section
from tests.unit.test_render import md_unescape, table_cells


def summary(
    run_id: str,
    coll: tuple[int, int],
    p99: float,
    verdict: str,
    *,
    decision: tuple[int, int] = (200, 1000),
    errors: int = 0,
    t99: float | None = 1.43,
) -> dict[str, Any]:
    s: dict[str, Any] = {
        "run_id": run_id,
        "sampling": {
            "decision": Proportion(*decision).to_dict(),
            "prediction": {"checked": 500, "mismatches": 0},
        },
        "mesh": {"collection": Proportion(*coll).to_dict(), "leaked": 0, "leak_checked": 800},
        "reference": {"collection": Proportion(100, 100).to_dict()},
        "propagation": Proportion(10, 10).to_dict(),
        "requests": {"total": 1000, "errors": errors},
        "latency_ms": {"none": {"n": 1000, "p99": p99}},
        "verdicts": {"mesh_collection": verdict},
    }
    if t99 is not None:
        s["queryable"] = {"traces": 100, "resolution_s": 1.0, "t50_s": 1.0, "t99_s": t99}
    return s


def rows_of(cmp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["measure"]: r for r in cmp["rows"]}


# --- the tests ---------------------------------------------------------------------------------------


def test_the_two_proportion_test_against_hand_computed_values() -> None:
    # 950/1000 vs 990/1000: p̂ = 0.97, se = sqrt(0.97 * 0.03 * 0.002) = 0.0076289, z = 5.2432
    p, test = two_proportion_p(950, 1000, 990, 1000)
    assert test == "z" and p == pytest.approx(1.578e-7, rel=1e-3)
    # 25/100 vs 20/100: p̂ = 0.225, se = 0.059055, z = 0.84668, p = 2 (1 - Φ(0.84668)) = 0.3972
    p, test = two_proportion_p(25, 100, 20, 100)
    assert test == "z" and p == pytest.approx(0.3972, abs=1e-4)
    # 0/10 vs 5/10: expected 2.5 < 5, so Fisher: P(0) + P(5) = 2 * C(15,10) / C(20,10) = 6006 / 184756
    p, test = two_proportion_p(0, 10, 5, 10)
    assert test == "fisher" and p == pytest.approx(6006 / 184756, rel=1e-9)
    assert fisher_exact_p(3, 10, 3, 10) == pytest.approx(1.0)
    # both all-found: nothing to tell apart
    assert two_proportion_p(100, 100, 1000, 1000)[0] == pytest.approx(1.0)


def test_the_quantile_test_on_a_shifted_tail() -> None:
    baseline = [float(i) for i in range(1, 1001)]  # p99 990.01
    current = [float(i) for i in range(1, 951)] + [float(i) for i in range(1951, 2001)]  # p99 1990.01
    # pooled 2000 values: the 99th percentile is 1980.01 (positions 1979 and 1980: 1980, 1981);
    # above it: 20 of the current run (1981..2000), none of the baseline. p̂ = 0.01,
    # se = sqrt(0.01 * 0.99 * 0.002) = 0.0044497, z = 0.02 / se = 4.4947, p = 6.97e-6
    assert quantile_test_p(current, baseline) == pytest.approx(6.97e-6, rel=1e-2)
    assert quantile_test_p(baseline, baseline) == pytest.approx(1.0)


# --- the rules per measure ---------------------------------------------------------------------------


def test_a_real_collection_drop_is_different_and_says_why() -> None:
    cmp = compare_summaries(
        summary("new", (950, 1000), 12.0, "fail"), summary("old", (990, 1000), 10.0, "pass")
    )
    coll = rows_of(cmp)["mesh collection"]
    assert coll["change"] == "different" and coll["test"] == "z"
    assert coll["delta"] == pytest.approx(-0.04)
    assert coll["basis"] == "p < 0.001, -4.0 points ≥ 1 point"
    assert cmp["verdict_changes"] == [{"verdict": "mesh_collection", "baseline": "pass", "current": "fail"}]
    md = render_comparison_markdown(cmp)
    (line,) = [ln for ln in md.splitlines() if ln.startswith("| mesh collection |")]
    assert [md_unescape(c) for c in table_cells(line)] == [
        "mesh collection", "99.00 % (990/1,000)", "95.00 % (950/1,000)", "-4.00 points",
        "different (p < 0.001, -4.0 points ≥ 1 point)",
    ]  # fmt: skip
    assert "mesh\\_collection: pass -\\> fail" in md or "mesh\\_collection: pass -> fail" in md


def test_significant_but_small_and_large_but_noisy_rate_changes_are_the_same() -> None:
    # 99.5 % vs 99.0 % of 100,000: z = 12.96, p < 0.001, but 0.5 points < 1 point
    big = compare_summaries(
        summary("a", (99500, 100000), 10.0, "pass"), summary("b", (99000, 100000), 10.0, "pass")
    )
    row = rows_of(big)["mesh collection"]
    assert (row["change"], row["basis"]) == ("same", "p < 0.001, but +0.50 points < 1 point")
    # 25 % vs 20 % of 100 decisions: 5 points, but p = 0.40
    noisy = compare_summaries(
        summary("a", (99, 100), 10.0, "pass", decision=(25, 100)),
        summary("b", (99, 100), 10.0, "pass", decision=(20, 100)),
    )
    row = rows_of(noisy)["decision rate"]
    assert (row["change"], row["basis"]) == ("same", "p = 0.40, not significant at 0.05")
    assert row["p_value"] == pytest.approx(0.3972, abs=1e-4)


def test_error_rate_has_a_smaller_practical_threshold() -> None:
    # 8 vs 0 errors of 1000: expected 4 < 5 -> Fisher. The observed table is the most extreme one,
    # P = C(1000,8) / C(2000,8) = prod((1000 - i) / (2000 - i), i = 0..7), and its mirror (0 vs 8)
    # is as likely: p = 2 P = 0.0077; 0.8 points ≥ 0.5 points
    cmp = compare_summaries(
        summary("a", (990, 1000), 10.0, "pass", errors=8), summary("b", (990, 1000), 10.0, "pass")
    )
    row = rows_of(cmp)["error rate"]
    expected = 2.0
    for i in range(8):
        expected *= (1000 - i) / (2000 - i)
    assert row["test"] == "fisher" and row["p_value"] == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.0077, abs=1e-4)
    assert (row["change"], row["basis"]) == ("different", "p = 0.008, +0.80 points ≥ 0.5 points")


def test_time_to_queryable_within_its_resolution_is_the_same() -> None:
    # 1.43 s -> 1.98 s, each read at one poll a second: 0.55 s < 1 s is never a difference
    cmp = compare_summaries(
        summary("a", (990, 1000), 10.0, "pass", t99=1.98), summary("b", (990, 1000), 10.0, "pass")
    )
    row = rows_of(cmp)["time to queryable p99"]
    assert (row["change"], row["basis"]) == ("same", "within 1 s resolution")
    assert row["delta"] == pytest.approx(0.55)
    cmp = compare_summaries(
        summary("a", (990, 1000), 10.0, "pass", t99=3.43), summary("b", (990, 1000), 10.0, "pass")
    )
    row = rows_of(cmp)["time to queryable p99"]
    assert (row["change"], row["basis"]) == ("different", "+2.00 s ≥ 1 s resolution")
    missing = compare_summaries(
        summary("a", (990, 1000), 10.0, "pass", t99=None), summary("b", (990, 1000), 10.0, "pass")
    )
    assert rows_of(missing)["time to queryable p99"]["basis"] == "n/a (not measured in this run)"


def test_p99_needs_a_practical_shift_and_with_the_ledgers_a_significant_one() -> None:
    # 2.60 -> 3.05 ms: +0.45 ms < 1 ms (17 % of the baseline, but under a millisecond)
    small = rows_of(
        compare_summaries(summary("a", (990, 1000), 3.05, "pass"), summary("b", (990, 1000), 2.6, "pass"))
    )
    assert (small["p99 latency none"]["change"], small["p99 latency none"]["basis"]) == (
        "same",
        "+0.45 ms < 1 ms",
    )
    # 250 -> 260 ms: 10 ms but 4 % of the baseline
    rel = rows_of(
        compare_summaries(summary("a", (990, 1000), 260.0, "pass"), summary("b", (990, 1000), 250.0, "pass"))
    )
    assert rel["p99 latency none"]["basis"] == "+10.00 ms < 10 % of 250.00 ms"
    # 990.01 -> 1990.01 ms with no ledgers: the threshold alone, and the row says so
    big = rows_of(
        compare_summaries(
            summary("a", (990, 1000), 1990.01, "pass"), summary("b", (990, 1000), 990.01, "pass")
        )
    )
    assert big["p99 latency none"]["change"] == "different"
    assert (
        big["p99 latency none"]["basis"] == "+1000.00 ms ≥ 1 ms and ≥ 10 %; no per-request latencies to test"
    )
    # with the ledgers' latencies (the tail test above): p = 6.97e-6
    baseline = [float(i) for i in range(1, 1001)]
    current = [float(i) for i in range(1, 951)] + [float(i) for i in range(1951, 2001)]
    tested = rows_of(
        compare_summaries(
            summary("a", (990, 1000), 1990.01, "pass"), summary("b", (990, 1000), 990.01, "pass"),
            latencies=({"none": current}, {"none": baseline}),
        )
    )["p99 latency none"]  # fmt: skip
    assert tested["test"] == "quantile" and tested["p_value"] == pytest.approx(6.97e-6, rel=1e-2)
    assert tested["basis"] == "p < 0.001, +1000.00 ms ≥ 1 ms and ≥ 10 %"
    # the same p99 shift from two samples that share their tail is not significant
    same_tail = rows_of(
        compare_summaries(
            summary("a", (990, 1000), 20.0, "pass"), summary("b", (990, 1000), 10.0, "pass"),
            latencies=({"none": baseline}, {"none": baseline}),
        )
    )["p99 latency none"]  # fmt: skip
    assert (same_tail["change"], same_tail["basis"]) == ("same", "p = 1.00, not significant at 0.05")


def test_a_run_compared_with_itself_changes_nothing() -> None:
    s = summary("same", (990, 1000), 10.0, "pass")
    cmp = compare_summaries(s, s)
    assert cmp["verdict_changes"] == []
    assert {r["change"] for r in cmp["rows"]} == {"same", "n/a"}
    assert rows_of(cmp)["requests"]["basis"] == "a count: follows the rate and the duration, not judged"
    assert "No verdict changed." in render_comparison_markdown(cmp)


def test_answered_latencies_read_status_200_records_only() -> None:
    rows = [
        {"mode": "none", "status": 200, "latency_ms": 2.5},
        {"mode": "none", "status": 502, "latency_ms": 9.0},
        {"mode": "b3", "status": 200, "latency_ms": 4},
        {"mode": "b3", "status": 200, "latency_ms": None},
        {"mode": "b3", "status": 200, "latency_ms": True},
    ]
    assert answered_latencies(rows) == {"none": [2.5], "b3": [4.0]}


# --- the HTML section ----------------------------------------------------------------------------------


def test_the_html_report_has_the_comparison_section() -> None:
    cmp = compare_summaries(
        summary("new<b>", (950, 1000), 12.0, "fail"), summary("old&x", (990, 1000), 10.0, "pass")
    )
    page = render_html(summary("new<b>", (950, 1000), 12.0, "fail"), comparison=cmp)
    root = ET.fromstring(page.encode())  # well-formed: every text escaped
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    (section,) = [
        s for s in root.iter("{http://www.w3.org/1999/xhtml}section") if s.get("id") == "comparison"
    ]
    assert "".join(section.find("h:h2", ns).itertext()) == "Compared with baseline old&x"  # type: ignore[union-attr]
    cells = {
        "".join(tr[0].itertext()): ["".join(td.itertext()) for td in tr]
        for tr in section.iter("{http://www.w3.org/1999/xhtml}tr")
        if tr.find("h:td", ns) is not None
    }
    assert cells["mesh collection"][1:] == [
        "99.00 % (990/1,000)", "95.00 % (950/1,000)", "-4.00 points", "different (p < 0.001, -4.0 points ≥ 1 point)",
    ]  # fmt: skip
    assert cells["time to queryable p99"][4] == "same (within 1 s resolution)"
    assert "mesh_collection: pass → fail" in "".join(section.itertext())
    assert comparison_section(None) == "" and 'id="comparison"' not in render_html(
        summary("x", (1, 1), 1.0, "pass")
    )
