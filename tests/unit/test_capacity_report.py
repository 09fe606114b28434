"""The capacity report's charts and title (issue 13): whole-number user ticks, y axes that start
at zero or say they are zoomed, a partial last window shaded and named, a step cut short marked,
and report.html titled as a capacity report. Expected ticks are worked out in the comments."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from loadgen.report.html import render_html
from loadgen.report.plots import Series, line_chart
from loadgen.report.scales import integer_step, line_domains
from loadgen.report.tables import ledger_timeseries

from .test_html_report import build_summary, by_role, find_id, page, prop, svg_root

CHARTS = ("chart-capacity-throughput", "chart-capacity-latency", "chart-capacity-rates")


def users_steps(*rows: tuple[int, float, float, float], knee: int | None = None) -> list[dict[str, Any]]:
    """Closed-loop users steps as steps.json holds them: (users, req/s, p50, p99)."""
    return [
        {
            "index": i, "label": f"{u} users", "kind": "users", "users": u, "achieved_rps": rps,
            "p50_ms": p50, "p99_ms": p99, "collection": prop(990, 1000), "errors": prop(0, 1000),
            "complete": True, "knee": i == knee, "breaches": ["scaling"] if i == knee else [],
        }
        for i, (u, rps, p50, p99) in enumerate(rows)
    ]  # fmt: skip


def texts(root: ET.Element, role: str) -> list[str]:
    return ["".join(e.itertext()) for e in by_role(root, role)]


def test_integer_steps_for_counts() -> None:
    # span 4 over ~8 intervals: nice_step 0.5 -> 1; span 15: 2 -> 2; span 20: 2.5 -> 2; 38: 5 -> 5
    assert [integer_step(s, 8) for s in (4, 15, 20, 38)] == [1.0, 2.0, 2.0, 5.0]
    assert integer_step(200, 8) == 25.0  # 25 is a whole number: kept


def test_the_issue_run_charts_integer_users_and_zero_based_axes() -> None:
    # 2 -> 6 users (the issue's run): before, the x ticks were 2, 2.5, ..., 6 and the throughput
    # axis ran 1,200 - 1,600, drawing a 19 % drop as most of the chart's height.
    steps = users_steps((2, 1559.0, 1.1, 2.6), (6, 1261.0, 4.0, 13.6), knee=1)
    root = page(render_html(build_summary(), None, steps=steps))
    for chart_id in CHARTS:
        chart = find_id(root, chart_id)
        xticks = texts(chart, "xtick")
        assert xticks == ["2", "3", "4", "5", "6"], (chart_id, xticks)  # span 4: step 1
        yticks = texts(chart, "ytick")
        assert yticks[0] in ("0", "0%") or texts(chart, "zoom"), (chart_id, yticks)
    throughput = find_id(root, "chart-capacity-throughput")
    assert texts(throughput, "ytick")[0] == "0" and texts(throughput, "zoom") == []
    # the rates (errors at 0 %) start at zero too
    assert texts(find_id(root, "chart-capacity-rates"), "ytick")[0] == "0%"


def test_a_rate_axis_may_zoom_and_then_says_so() -> None:
    rates = svg_root(
        line_chart(chart_id="r", title="r", series=[Series("c", [1, 2], [0.97, 0.99])], y_clamp=(0.0, 1.0))
    )
    # 0.97-0.99: span 0.02 over ~5 intervals, step 0.005 -> domain 0.97-0.99
    assert texts(rates, "ytick")[0] == "0.97"
    assert texts(rates, "zoom") == ["y axis zoomed: starts at 0.97"] and by_role(rates, "axis-break")
    # a quantity never zooms by default; it may on request, labelled
    plain = svg_root(line_chart(chart_id="q", title="q", series=[Series("q", [1, 2], [1200, 1600])]))
    assert texts(plain, "ytick")[0] == "0" and texts(plain, "zoom") == []
    zoomed = line_domains([1.0, 2.0], [1200.0, 1600.0], y_zoom=True)
    assert (zoomed.y_lo, zoomed.zoomed) == (1200.0, True)
    assert line_domains([1.0, 2.0], [-5.0, 5.0], y_zoom=True).zoomed is False  # zero is inside


def test_rate_steps_keep_their_rate_axis_and_a_cut_short_step_is_marked() -> None:
    steps = users_steps((10, 100.0, 2.0, 5.0), (10, 180.0, 3.0, 8.0), (10, 150.0, 9.0, 30.0), knee=1)
    for s, rate in zip(steps, (100, 200, 400), strict=True):
        s["target_rps"], s["label"] = rate, f"{rate} req/s"
    steps[2]["complete"] = False
    root = page(render_html(build_summary(), None, steps=steps))
    chart = find_id(root, "chart-capacity-latency")
    names = [e.get("data-name") for e in by_role(chart, "vmarker")]
    assert names == ["knee: 200 req/s", "cut short: 400 req/s"]
    # span 300 over ~8 intervals: nice_step 50 (100, 150, ..., 400)
    assert texts(chart, "xtick") == ["100", "150", "200", "250", "300", "350", "400"]


def test_the_knee_step_cut_short_says_both() -> None:
    steps = users_steps((2, 100.0, 1.0, 2.0), (4, 120.0, 1.0, 2.0), knee=1)
    steps[1]["complete"] = False
    root = page(render_html(build_summary(), None, steps=steps))
    names = [e.get("data-name") for e in by_role(find_id(root, "chart-capacity-throughput"), "vmarker")]
    assert names == ["knee: 4 users (cut short)"]


def ledger(last_latency_ms: float) -> list[dict[str, Any]]:
    """Requests at 0.0, 0.5, 1.0, 1.5 and 2.2 s (10 ms each but the last): three 1-s windows;
    the last one starts at 2.0 and covers up to the last request's end."""
    t0 = 1_700_000_000.0
    times = (0.0, 0.5, 1.0, 1.5, 2.2)
    return [
        {"ts": t0 + t, "status": 200, "latency_ms": last_latency_ms if i == 4 else 10.0, "mode": "none"}
        for i, t in enumerate(times)
    ]


@pytest.mark.parametrize(("last_latency_ms", "covered"), [(100.0, 0.3), (900.0, 1.0)])
def test_a_partial_last_window_is_shaded_and_named(last_latency_ms: float, covered: float) -> None:
    # last window: starts 2.0, the request starts 2.2 and ends 2.3 (covered 0.3 s) or 3.1 (full)
    ts = ledger_timeseries(ledger(last_latency_ms))
    assert [w["covered_s"] for w in ts["windows"]] == pytest.approx([1.0, 1.0, covered])
    root = page(render_html(build_summary(), ts))
    for chart_id in ("chart-throughput", "chart-latency"):
        chart = find_id(root, chart_id)
        if covered < 1.0:
            assert texts(chart, "partial-label") == ["partial window (0.3 of 1 s)"]
            (rect,) = by_role(chart, "partial")
            assert float(rect.get("width", "0")) > 0
        else:
            assert by_role(chart, "partial") == [] and texts(chart, "partial-label") == []


def test_report_html_of_a_capacity_run_is_titled_as_one() -> None:
    summary = build_summary()
    steps = users_steps((2, 100.0, 1.0, 2.0), (4, 200.0, 1.0, 2.0))
    capacity = page(render_html(summary, None, steps=steps))
    title = next(e for e in capacity.iter() if e.tag.endswith("title") and e.text and "run-1" in e.text)
    assert title.text == "loadgen capacity report run-1"
    h1 = next(e for e in capacity.iter() if e.tag.endswith("h1"))
    assert "".join(h1.itertext()).startswith("loadgen capacity report")
    plain = page(render_html(summary, None))
    title = next(e for e in plain.iter() if e.tag.endswith("title") and e.text and "run-1" in e.text)
    assert title.text == "loadgen run run-1"
