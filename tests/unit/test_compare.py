"""A run compared with a baseline: real changes vs noise, flipped verdicts."""

from __future__ import annotations

from typing import Any

from loadgen.analysis.stats import Proportion
from loadgen.report.compare import compare_summaries, render_comparison_markdown


def summary(run_id: str, coll: tuple[int, int], p99: float, verdict: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "sampling": {"decision": Proportion(200, 1000).to_dict(), "prediction": {"mismatches": 0}},
        "mesh": {"collection": Proportion(*coll).to_dict(), "leaked": 0},
        "reference": {"collection": Proportion(100, 100).to_dict()},
        "propagation": Proportion(10, 10).to_dict(),
        "requests": {"total": 1000, "errors": 0},
        "latency_ms": {"none": {"p99": p99}},
        "verdicts": {"mesh_collection": verdict},
    }


def test_non_overlapping_intervals_are_a_change_and_overlapping_ones_noise() -> None:
    cmp = compare_summaries(
        summary("new", (800, 1000), 12.0, "fail"), summary("old", (990, 1000), 10.0, "pass")
    )
    rows = {r["measure"]: r for r in cmp["rows"]}
    assert rows["mesh collection"]["change"] == "changed"
    assert abs(rows["mesh collection"]["delta"] - (0.8 - 0.99)) < 1e-12
    assert rows["decision rate"]["change"] == "within noise" and rows["decision rate"]["delta"] == 0
    assert rows["p99 ms none"]["delta"] == 2.0 and rows["p99 ms none"]["change"] == "different"
    assert cmp["verdict_changes"] == [{"verdict": "mesh_collection", "baseline": "pass", "current": "fail"}]
    md = render_comparison_markdown(cmp)
    assert "mesh\\_collection: pass -\\> fail" in md or "mesh\\_collection: pass -> fail" in md


def test_a_run_compared_with_itself_changes_nothing() -> None:
    s = summary("same", (990, 1000), 10.0, "pass")
    cmp = compare_summaries(s, s)
    assert cmp["verdict_changes"] == []
    assert all(r["change"] in ("within noise", "same", "n/a") for r in cmp["rows"])
    assert "No verdict changed." in render_comparison_markdown(cmp)
