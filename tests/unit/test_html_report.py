"""The HTML report: SVG plots, the ledger folded into time windows, CSV tables, escaping.

Expected coordinates and window numbers are worked out in the comments from the inputs (pixel
arithmetic on the default 720x300 frame, percentiles by linear interpolation), not copied from
the code's output."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from loadgen.analysis.reconcile import Expectation, TraceObservation, reconcile_mesh, reconcile_reference
from loadgen.analysis.stats import wilson_interval
from loadgen.analysis.verdicts import run_verdicts
from loadgen.backends.base import FetchStatus
from loadgen.mesh.modes import HeaderMode
from loadgen.report import plots
from loadgen.report.html import render_html, render_run_folder
from loadgen.report.plots import (
    Band,
    BarGroup,
    Frame,
    HLine,
    LinearScale,
    Series,
    VMarker,
    bar_chart,
    line_chart,
    nice_domain,
    nice_step,
    ticks,
    visible_text,
    wrap_label,
    xml_escape,
)
from loadgen.report.tables import (
    MODE_COLUMNS,
    TIMESERIES_COLUMNS,
    csv_cell,
    expectation_from_summary,
    ledger_timeseries,
    modes_csv,
    timeseries_csv,
)
from loadgen.runfiles import load_fetched

SVG = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"
HOSTILE = "<script>alert('x')</script>\"&amp;\x1b[31m\u202e\x00]]>"


def svg_root(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML or this raises
    assert root.tag == f"{SVG}svg"
    return root


def by_role(root: ET.Element, role: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("data-role") == role]


def path_points(d: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML]\s*(-?[\d.]+) (-?[\d.]+)", d)]


def all_text(el: ET.Element) -> str:
    return "".join(el.itertext())


# --- plots: scales and ticks ----------------------------------------------------------------------


def test_linear_scale_maps_the_domain_onto_the_range() -> None:
    y = LinearScale(0.0, 100.0, 254.0, 52.0)  # pixel y grows downwards
    assert y(0.0) == 254.0 and y(100.0) == 52.0 and y(50.0) == 153.0
    x = LinearScale(10.0, 20.0, 0.0, 500.0)
    assert x(12.5) == 125.0
    assert LinearScale(3.0, 3.0, 0.0, 10.0)(3.0) == 5.0  # a degenerate domain maps to the middle


def test_nice_steps_domains_and_ticks() -> None:
    assert nice_step(100.0, 5) == 20.0
    assert nice_step(10.0, 8) == 2.0  # 1.25 per interval rounds up to 2
    assert nice_step(0.03, 5) == pytest.approx(0.01)  # 0.006 -> 0.01
    assert nice_domain(3.0, 97.0, 5) == (0.0, 100.0, 20.0)
    lo, hi, step = nice_domain(0.9, 1.0, 5)
    assert (lo, hi) == pytest.approx((0.9, 1.0)) and step == pytest.approx(0.02)
    lo, hi, _ = nice_domain(5.0, 5.0)  # a flat series gets room around it
    assert lo < 5.0 < hi
    assert ticks(0.0, 1.0, 0.2) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # no 0.6000000000000001
    assert ticks(0.95, 1.0, 0.01) == [0.95, 0.96, 0.97, 0.98, 0.99, 1.0]


def test_text_is_escaped_and_control_characters_made_visible() -> None:
    assert visible_text("a\x1bb\u202ec\nd") == "a\\x1bb\\u202ec\\x0ad"
    assert xml_escape('<a href="x">\'&') == "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;"
    assert xml_escape(3.5) == "3.5"


def test_wrap_label_breaks_at_underscores_and_cuts_with_an_ellipsis() -> None:
    assert wrap_label("none", 10) == ["none"]
    assert wrap_label("b3_multi_not_sampled", 12) == ["b3_multi_", "not_sampled"]
    assert wrap_label("abcdefghijklmnopqrstuvwxyz", 10) == ["abcdefghij", "klmnopqrs\u2026"]


# --- plots: line charts ---------------------------------------------------------------------------

# Default frame: plot area x from 64 to 700 (636 px), y from 254 (bottom) to 52 (top, 202 px).


def test_line_chart_coordinates_for_known_data() -> None:
    svg = line_chart(
        chart_id="c1",
        title="known",
        series=[Series("s", [0, 5, 10], [0, 50, 100])],
        bands=[Band("b", [0, 5, 10], [10, 10, 10], [20, 20, 20])],
        hlines=[HLine(50.0, "half")],
        vmarkers=[VMarker(2.5, "quarter")],
        x_domain=(0.0, 10.0),
        y_domain=(0.0, 100.0),
    )
    root = svg_root(svg)
    (line,) = by_role(root, "series")
    # (0,0) -> (64, 254); (5,50) -> (64 + 318, 254 - 101); (10,100) -> (700, 52)
    assert line.get("d") == "M64 254 L382 153 L700 52"
    (band,) = by_role(root, "band")
    # highs at 20 -> 254 - 20 * 2.02 = 213.6, forwards; lows at 10 -> 233.8, backwards; closed
    assert band.get("d") == "M64 213.6 L382 213.6 L700 213.6 L700 233.8 L382 233.8 L64 233.8 Z"
    (hline,) = by_role(root, "hline")
    assert hline.get("y1") == hline.get("y2") == "153" and hline.get("data-name") == "half"
    (vmarker,) = by_role(root, "vmarker")
    assert vmarker.get("x1") == vmarker.get("x2") == "223"  # 64 + 636 / 4
    # y ticks every 20 (100 / 5), x ticks every 2 (10 / 8 = 1.25 rounds up to 2)
    assert [t.text for t in by_role(root, "ytick")] == ["0", "20", "40", "60", "80", "100"]
    assert [t.text for t in by_role(root, "xtick")] == ["0", "2", "4", "6", "8", "10"]
    assert [t.text for t in by_role(root, "legend")] == ["s", "b"]
    assert root.find(f"{SVG}title") is not None and root.find(f"{SVG}title").text == "known"  # type: ignore[union-attr]


def test_none_values_break_a_line_and_a_band_into_runs() -> None:
    root = svg_root(
        line_chart(
            chart_id="gaps",
            title="gaps",
            series=[Series("s", [0, 1, 2, 3], [1.0, None, 3.0, 4.0])],
            bands=[Band("b", [0, 1, 2, 3], [0.5, None, 2.5, 3.5], [1.5, None, 3.5, 4.5])],
            x_domain=(0.0, 3.0),
            y_domain=(0.0, 5.0),
        )
    )
    runs = [path_points(e.get("d", "")) for e in by_role(root, "series")]
    assert [len(r) for r in runs] == [1, 2]
    assert runs[0] == [(64.0, 213.6)]  # 254 - 1 * 40.4
    bands = by_role(root, "band")
    # a one-point band is widened by 0.15 on each side so a single window still shows its interval
    first = path_points(bands[0].get("d", ""))
    assert first[0][0] == pytest.approx(64 - 0.15 * 212, abs=0.01)
    assert len(bands) == 2


def test_step_series_holds_each_value_until_the_next_x() -> None:
    root = svg_root(
        line_chart(
            chart_id="step",
            title="step",
            series=[Series("s", [0, 1, 2], [0.0, 1.0, 1.0], step=True)],
            x_domain=(0.0, 2.0),
            y_domain=(0.0, 1.0),
        )
    )
    (line,) = by_role(root, "series")
    # (0,0) (1,0) (1,1) (2,1) (2,1): a horizontal run then a vertical jump at x = 1
    assert path_points(line.get("d", "")) == [(64, 254), (382, 254), (382, 52), (700, 52), (700, 52)]


def test_automatic_domains_cover_reference_lines_and_respect_the_clamp() -> None:
    root = svg_root(
        line_chart(
            chart_id="rates",
            title="rates",
            series=[Series("r", [0, 1], [0.97, 0.99])],
            bands=[Band("ci", [0, 1], [0.95, 0.97], [0.99, 1.0])],
            hlines=[HLine(0.9, "min")],
            y_clamp=(0.0, 1.0),
            y_format=plots.fmt_pct,
        )
    )
    labels = [t.text for t in by_role(root, "ytick")]
    assert labels[0] == "90%" and labels[-1] == "100%"  # the 0.9 line is in; 1.0 is the top
    (hline,) = by_role(root, "hline")
    assert hline.get("y1") == "254"  # the minimum sits on the bottom edge


def test_markers_carry_tooltips_and_labels_are_drawn_above_the_data() -> None:
    root = svg_root(
        line_chart(
            chart_id="m",
            title="m",
            series=[Series("p99", [1, 2], [3.0, 4.0], markers=True)],
            vmarkers=[VMarker(1.5, "knee")],
        )
    )
    points = by_role(root, "point")
    assert len(points) == 2
    assert [all_text(p) for p in points] == ["p99: 1 \u2192 3", "p99: 2 \u2192 4"]


def test_empty_charts_say_no_data() -> None:
    for svg in (
        line_chart(chart_id="e", title="empty", series=[Series("s", [], [])]),
        line_chart(chart_id="e2", title="all none", series=[Series("s", [0, 1], [None, None])]),
        bar_chart(chart_id="e3", title="no bars", categories=[], groups=[]),
    ):
        root = svg_root(svg)
        assert "no data" in all_text(root)
        assert not by_role(root, "series") and not by_role(root, "bar")


# --- plots: bar charts ----------------------------------------------------------------------------


def test_bar_chart_heights_and_positions_for_known_data() -> None:
    frame = Frame(width=400.0, height=300.0, left=50.0, right=50.0, top=50.0, bottom=50.0)
    root = svg_root(
        bar_chart(
            chart_id="bars",
            title="bars",
            categories=["a", "b"],
            groups=[BarGroup("p50", [10.0, 20.0]), BarGroup("p99", [15.0, None])],
            frame=frame,
        )
    )
    # y domain 0..20 (step 5) onto 250..50: 10 px per unit. Slots of 150 px, bars of 0.78 * 150 / 2.
    bars = by_role(root, "bar")
    assert len(bars) == 3  # the None bar is not drawn
    heights = [float(b.get("height", "0")) for b in bars]
    assert heights == [100.0, 150.0, 200.0]  # a/p50, a/p99, b/p50 in drawing order
    assert [float(b.get("y", "0")) for b in bars] == [150.0, 100.0, 50.0]
    slot_left_a = 50 + (150 - 117) / 2  # 16.5 px of padding in the 150 px slot
    assert float(bars[0].get("x", "0")) == pytest.approx(slot_left_a + 1)
    assert float(bars[1].get("x", "0")) == pytest.approx(slot_left_a + 58.5 + 1)
    assert [all_text(b) for b in bars] == ["a p50: 10", "a p99: 15", "b p50: 20"]
    assert [all_text(t) for t in by_role(root, "xtick")] == ["a", "b"]


def test_hostile_names_in_a_chart_stay_text() -> None:
    svg = bar_chart(
        chart_id='h"<x>',
        title=HOSTILE,
        categories=[HOSTILE],
        groups=[BarGroup(HOSTILE, [1.0])],
        hlines=[HLine(0.5, HOSTILE)],
    ) + line_chart(
        chart_id="h2",
        title=HOSTILE,
        series=[Series(HOSTILE, [0, 1], [1, 2], markers=True)],
        bands=[Band(HOSTILE, [0, 1], [0, 1], [2, 3])],
        hlines=[HLine(1.5, HOSTILE)],
        vmarkers=[VMarker(0.5, HOSTILE)],
        note=HOSTILE,
    )
    assert "<script" not in svg and "\x1b" not in svg and "\x00" not in svg and "\u202e" not in svg
    first, second = svg.split("</svg>")[:2]
    for doc in (first + "</svg>", second + "</svg>"):
        root = svg_root(doc)
        assert {e.tag for e in root.iter()} <= {
            f"{SVG}{t}"
            for t in (
                "svg",
                "title",
                "rect",
                "line",
                "text",
                "tspan",
                "path",
                "circle",
                "g",
                "defs",
                "clipPath",
            )
        }
        shown = visible_text(HOSTILE)
        texts = [all_text(e) for e in root.iter(f"{SVG}text")]
        assert shown in texts  # the title, legend and labels show the string, escaped
        assert root.find(f"{SVG}title").text == shown  # type: ignore[union-attr]
        names = {e.get("data-name") for e in root.iter() if e.get("data-name")}
        assert names == {shown}


# --- ledger_timeseries ------------------------------------------------------------------------------

EXPECT = Expectation(spans_per_trace=2, services=("gateway", "app"), configured_percent=50.0)
COMPLETE = TraceObservation(FetchStatus.FOUND, 2, ("app", "gateway"))
ONE_SPAN = TraceObservation(FetchStatus.FOUND, 1, ("gateway",))
ABSENT = TraceObservation(FetchStatus.MISSING)


def tid(i: int) -> str:
    return f"{0xABC0000000000000 + i:016x}{i:016x}"


def rec(
    mode: HeaderMode, ts: float | None, latency: float, flag: str | None, trace: int, **kw: Any
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "rid": f"r{trace}",
        "mode": mode.value,
        "ts": ts,
        "latency_ms": latency,
        "status": 200,
        "up_trace": tid(trace),
        "up_flag": flag,
    }
    r.update(kw)
    return r


N, MS, MNF, MNS = (
    HeaderMode.NONE,
    HeaderMode.B3_MULTI_SAMPLED,
    HeaderMode.B3_MULTI_NO_FLAG,
    HeaderMode.B3_MULTI_NOT_SAMPLED,
)

RECORDS = [
    rec(N, 1000.0, 10.0, "1", 1),  # window 0: proxy-decided, sampled, complete -> found
    rec(
        N, 999.95, 12.0, "0", 0
    ),  # started 50 ms before the first line: still window 0; never queried -> unknown
    rec(N, 1000.2, 30.0, "0", 2),  # proxy, not sampled, absent -> not_sampled
    rec(MS, 1000.5, 20.0, "1", 3),  # forced sampled (not a proxy decision), one span of two -> partial
    rec(N, 1000.9, 5.0, None, 4, status=503, error="503"),  # error: no decision -> unknown
    rec(MNF, 1002.1, 40.0, "1", 5),  # window 2: proxy, sampled, absent -> missing
    rec(MNS, 1002.4, 50.0, "0", 6),  # forced not sampled, yet found -> leaked
    rec(N, 1002.5, 60.0, "1", 7),  # proxy, sampled, never queried -> unknown
    rec(N, None, 1.0, "1", 8),  # no start time: untimed
]
OBSERVATIONS = {tid(1): COMPLETE, tid(2): ABSENT, tid(3): ONE_SPAN, tid(5): ABSENT, tid(6): COMPLETE}


def test_ledger_timeseries_on_hand_built_records() -> None:
    ts = ledger_timeseries(RECORDS, 1.0, observations=OBSERVATIONS, expect=EXPECT)
    assert ts["t0"] == 1000.0 and ts["window_s"] == 1.0
    assert ts["requests"] == 9 and ts["untimed"] == 1
    w0, w1, w2 = ts["windows"]
    assert [w["t_s"] for w in ts["windows"]] == [0.0, 1.0, 2.0]
    # window 0: 5 requests, 1 error; successful latencies 10, 12, 20, 30
    assert (w0["requests"], w0["errors"], w0["rps"]) == (5, 1, 5.0)
    assert w0["p50_ms"] == pytest.approx(16.0)  # position 1.5: 12 + 0.5 * 8
    assert w0["p95_ms"] == pytest.approx(28.5)  # position 2.85: 20 + 0.85 * 10
    assert w0["p99_ms"] == pytest.approx(29.7)
    # decided: r1 yes, r0 no, r2 no, r3 yes; proxy-decided (mode none): r1, r0, r2 -> 1 of 3
    assert (w0["sampled_fraction"]["k"], w0["sampled_fraction"]["n"]) == (2, 4)
    assert w0["decision"] == {"k": 1, "n": 3, "rate": 1 / 3, "ci95": list(wilson_interval(1, 3))}
    assert w0["outcomes"] == {
        "found": 1,
        "partial": 1,
        "missing": 0,
        "leaked": 0,
        "not_sampled": 1,
        "unknown": 2,
        "not_queried": 0,
    }
    assert (w0["collection"]["k"], w0["collection"]["n"]) == (1, 2)  # found / (found + partial + missing)
    # window 1: nothing started; kept so the time axis has no hole
    assert (w1["requests"], w1["rps"], w1["p50_ms"], w1["decision"]["rate"]) == (0, 0.0, None, None)
    assert w1["collection"]["n"] == 0
    # window 2 (the last): ends when its last request ended, 1002.5 + 0.06 -> covers 0.56 s
    assert w2["requests"] == 3 and w2["rps"] == pytest.approx(3 / 0.56)
    assert w2["p50_ms"] == 50.0
    assert (w2["decision"]["k"], w2["decision"]["n"]) == (2, 2)  # r5 (no flag) and r7 (none)
    assert (w2["sampled_fraction"]["k"], w2["sampled_fraction"]["n"]) == (2, 3)
    assert w2["outcomes"]["missing"] == 1 and w2["outcomes"]["leaked"] == 1 and w2["outcomes"]["unknown"] == 1
    assert (w2["collection"]["k"], w2["collection"]["n"]) == (0, 1)


def test_ledger_timeseries_without_observations_and_with_half_second_windows() -> None:
    ts = ledger_timeseries(RECORDS, 0.5)
    # windows of 0.5 s from 1000.0 to 1002.5: indices 0..5
    assert [w["requests"] for w in ts["windows"]] == [3, 2, 0, 0, 2, 1]
    assert all(w["collection"] is None and w["outcomes"] is None for w in ts["windows"])
    assert ledger_timeseries([], 1.0) == {
        "window_s": 1.0,
        "t0": None,
        "requests": 0,
        "untimed": 0,
        "windows": [],
    }


def test_ledger_timeseries_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="window_s"):
        ledger_timeseries(RECORDS, 0.0)
    with pytest.raises(ValueError, match="Expectation"):
        ledger_timeseries(RECORDS, observations=OBSERVATIONS)
    with pytest.raises(ValueError, match="windows"):
        ledger_timeseries([rec(N, 1000.0, 1.0, "1", 1), rec(N, 1000.0 + 1e9, 1.0, "1", 2)], 1e-3)


def test_windows_add_up_to_the_reconciled_summary() -> None:
    """Random ledgers: the per-window counts summed equal reconcile_mesh's totals."""
    rng = random.Random(7)
    modes = list(HeaderMode)
    records, observations = [], {}
    for i in range(600):
        flag = rng.choice(["1", "0", None])
        xrid = f"{rng.getrandbits(32):08x}-1c2d-{rng.choice('94')}e3f-8a4b-0123456789ab"
        r = rec(rng.choice(modes), 5000.0 + rng.random() * 7.3, rng.random() * 50, flag, i, up_xrid=xrid)
        if rng.random() < 0.05:
            r["status"] = 0
        records.append(r)
        observations[tid(i)] = rng.choice([COMPLETE, ONE_SPAN, ABSENT, TraceObservation(FetchStatus.ERROR)])
        if rng.random() < 0.1:
            del observations[tid(i)]
    summary = reconcile_mesh(records, observations, EXPECT)
    ts = ledger_timeseries(records, 1.0, observations=observations, expect=EXPECT)

    def total(key: str, field: str) -> int:
        return sum(w[key][field] for w in ts["windows"])

    assert len(ts["windows"]) == 8
    assert sum(w["requests"] for w in ts["windows"]) == summary["requests"]["total"] == 600
    assert sum(w["errors"] for w in ts["windows"]) == summary["requests"]["errors"]
    assert (total("decision", "k"), total("decision", "n")) == (
        summary["sampling"]["decision"]["k"],
        summary["sampling"]["decision"]["n"],
    )
    assert (total("collection", "k"), total("collection", "n")) == (
        summary["mesh"]["collection"]["k"],
        summary["mesh"]["collection"]["n"],
    )
    assert total("outcomes", "leaked") == summary["mesh"]["leaked"]
    assert total("outcomes", "partial") == summary["mesh"]["partial"]
    for outcome in ("found", "partial", "missing", "leaked", "not_sampled", "unknown"):
        assert total("outcomes", outcome) == sum(m[outcome] for m in summary["modes"].values())


# --- CSV --------------------------------------------------------------------------------------------


def build_summary() -> dict[str, Any]:
    summary: dict[str, Any] = {"schema_version": 1, "run_id": "run-1"}
    summary.update(reconcile_mesh([r for r in RECORDS if r["ts"]], OBSERVATIONS, EXPECT))
    summary["reference"] = reconcile_reference(
        [(tid(100), "exported", 2), (tid(101), "exported", 2)], {tid(100): COMPLETE}, {"spans_started": 4}
    )
    summary["verdicts"] = run_verdicts(summary, 0.99)
    summary["min_collection"] = 0.99
    summary["status"] = "complete"
    summary["started_at"] = 999.0
    summary["target"] = {
        "kind": "embedded",
        "gateway": "http://127.0.0.1:18080",
        "host": "httpbin.local",
        "collector": "http://127.0.0.1:19411",
        "backend": "http://127.0.0.1:19411",
    }
    summary["readback"] = {"quiet_s": 2.0, "poll_interval_s": 1.0, "stable": True, "polls": [{}, {}]}
    summary["queryable"] = {
        "traces": 3,
        "resolution_s": 1.0,
        "t50_s": 1.1,
        "t99_s": 2.2,
        "t100_s": 2.2,
        "curve": [
            {"t_s": 1.1, "complete": 2, "fraction": 2 / 3},
            {"t_s": 2.2, "complete": 3, "fraction": 1.0},
            {"t_s": 3.3, "complete": 3, "fraction": 1.0},
        ],
    }
    summary["tag_search"] = None
    summary["notes"] = ["a note"]
    return summary


def prop(k: int, n: int) -> dict[str, Any]:
    low, high = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": [low, high]}


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_modes_csv_has_one_row_per_mode_with_counts_and_latency() -> None:
    summary = build_summary()
    rows = read_csv(modes_csv(summary))
    assert rows[0] == MODE_COLUMNS
    assert [r[0] for r in rows[1:]] == list(summary["modes"])
    by_mode = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    none = by_mode["none"]
    # mode none: r1 found, r0 unknown, r2 not_sampled, r4 error (unknown), r7 unknown
    assert (none["requests"], none["errors"], none["found"], none["unknown"]) == ("5", "1", "1", "3")
    assert none["expected_decision"] == "proxy"
    assert float(none["p50_ms"]) == summary["latency_ms"]["none"]["p50"]


def test_modes_csv_has_the_header_mode_checks_and_violations_by_kind() -> None:
    by_mode = {
        r[0]: dict(zip(MODE_COLUMNS, r, strict=True)) for r in read_csv(modes_csv(build_summary()))[1:]
    }
    # r6: forced not sampled, echoed not sampled, yet its trace has spans -> a leak violation
    mns = by_mode["b3_multi_not_sampled"]
    assert (mns["expectation_checked"], mns["violations_leak"], mns["violations_decision"]) == ("1", "1", "0")
    # r5: no flag, no injected id: nothing definite could be checked
    assert by_mode["b3_multi_no_flag"]["expectation_checked"] == "0"
    # a summary from before these keys: empty cells, not zeros
    old = build_summary()
    for m in old["modes"].values():
        del m["expectation_checked"], m["violations"]
    row = dict(zip(MODE_COLUMNS, read_csv(modes_csv(old))[1], strict=True))
    assert row["expectation_checked"] == "" and row["violations_leak"] == ""


def test_csv_cells_are_neutralised_against_formulas_and_control_characters() -> None:
    assert csv_cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    for lead in "+-@":
        assert csv_cell(lead + "1") == "'" + lead + "1"
    assert csv_cell("a\x1bb") == "a\\x1bb"
    assert csv_cell(None) == "" and csv_cell(True) == "true" and csv_cell(-1) == -1
    assert csv_cell(6.7857000000000001) == 6.7857
    summary = build_summary()
    summary["modes"]["=cmd|' /C calc'!A0"] = summary["modes"].pop("none")
    rows = read_csv(modes_csv(summary))
    assert "'=cmd|' /C calc'!A0" in [r[0] for r in rows]


def test_timeseries_csv_has_one_row_per_window() -> None:
    ts = ledger_timeseries(RECORDS, 1.0, observations=OBSERVATIONS, expect=EXPECT)
    rows = read_csv(timeseries_csv(ts))
    assert rows[0] == TIMESERIES_COLUMNS
    assert len(rows) == 1 + 3
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["t_s"] == "0.0" and first["t_epoch"] == "1000.0"
    assert (first["requests"], first["errors"], first["decision_k"], first["decision_n"]) == (
        "5",
        "1",
        "1",
        "3",
    )
    assert float(first["decision_ci95_low"]) == pytest.approx(wilson_interval(1, 3)[0], abs=1e-6)
    assert (first["collection_k"], first["collection_n"], first["outcome_unknown"]) == ("1", "2", "2")
    empty = dict(zip(rows[0], rows[2], strict=True))
    assert empty["p50_ms"] == "" and empty["decision_rate"] == "" and empty["decision_ci95_low"] == ""
    no_obs = read_csv(timeseries_csv(ledger_timeseries(RECORDS, 1.0)))
    assert dict(zip(no_obs[0], no_obs[1], strict=True))["collection_k"] == ""


# --- the HTML page ----------------------------------------------------------------------------------


def page(html: str) -> ET.Element:
    assert html.startswith("<!DOCTYPE html>\n")
    root = ET.fromstring(html)  # the page is well-formed XML: nothing unbalanced slipped through
    assert root.tag == f"{XHTML}html"
    return root


def find_id(root: ET.Element, ident: str) -> ET.Element:
    for e in root.iter():
        if e.get("id") == ident:
            return e
    raise AssertionError(f"no element with id {ident!r}")


def assert_inert(root: ET.Element, html: str) -> None:
    """Nothing in the page can run or load: no script, no handler attribute, no URL attribute."""
    tags = {e.tag.split("}")[-1] for e in root.iter()}
    assert not tags & {"script", "iframe", "object", "embed", "img", "link", "a", "form", "foreignObject"}
    for e in root.iter():
        for name in e.attrib:
            assert not name.lower().startswith("on"), name
            assert name not in ("src", "href", "{http://www.w3.org/1999/xlink}href"), name
    assert "url(" not in html.replace('clip-path="url(#', "")  # only same-document clip references
    assert all(ch.isprintable() or ch == "\n" for ch in html)


def test_render_html_has_the_headline_the_charts_and_the_tables() -> None:
    summary = build_summary()
    ts = ledger_timeseries(RECORDS, 1.0, observations=OBSERVATIONS, expect=EXPECT)
    html = render_html(summary, ts)
    root = page(html)
    assert_inert(root, html)
    csp = [m.get("content", "") for m in root.iter(f"{XHTML}meta") if m.get("http-equiv")]
    assert csp and "default-src 'none'" in csp[0]
    assert all_text(find_id(root, "run-id")) == "run-1"
    # the verdicts of this summary: mesh collection fails (1 of 2), a leak, reference 1 of 2
    verdicts = summary["verdicts"]
    assert verdicts["mesh_collection"] == "fail" and verdicts["no_leaks"] == "fail"
    overall = find_id(root, "overall")
    assert "fail" in overall.get("class", "") and "FAIL" in all_text(overall)
    for key, verdict in verdicts.items():
        card = find_id(root, f"card-{key}")
        assert verdict in card.get("class", "") and verdict in all_text(card)
    charts = {e.get("id") for e in root.iter(f"{SVG}svg")}
    assert charts == {
        "chart-throughput",
        "chart-latency",
        "chart-decision",
        "chart-collection",
        "chart-modes-latency",
        "chart-queryable",
    }
    decision = find_id(root, "chart-decision")
    assert [e.get("data-name") for e in by_role(decision, "hline")] == ["configured 50 %"]
    assert {e.get("data-name") for e in by_role(decision, "band")} == {
        "95 % CI per window",
        "overall 95 % CI",
    }
    collection = find_id(root, "chart-collection")
    assert [e.get("data-name") for e in by_role(collection, "hline")] == ["minimum 99 %"]
    queryable = find_id(root, "chart-queryable")
    assert {e.get("data-name") for e in by_role(queryable, "vmarker")} == {"t50", "t99/t100"}
    table = find_id(root, "modes")
    modes_in_table = [all_text(th) for tr in table.iter(f"{XHTML}tr") for th in tr.findall(f"{XHTML}th")[:1]]
    assert modes_in_table[1:] == list(summary["modes"])
    assert "a note" in all_text(find_id(root, "notes"))
    with pytest.raises(AssertionError):
        find_id(root, "partial")


def test_the_load_delivered_card_names_the_commonest_error() -> None:
    summary = build_summary()
    total = summary["requests"]["total"]
    summary["requests"].update(errors=total, top_errors=[{"status": 0, "error": HOSTILE, "count": total}])
    summary["verdicts"] = run_verdicts(summary, 0.99)
    html = render_html(summary, ledger_timeseries(RECORDS, 1.0, observations=OBSERVATIONS, expect=EXPECT))
    root = page(html)  # the error text is data from the network: it must stay text
    assert_inert(root, html)
    card = all_text(find_id(root, "card-load_delivered"))
    assert "fail" in card and f"{total} of {total} requests failed · maximum 5.0 %" in card
    assert "most common: no response (<script>" in card and f"×{total}" in card
    assert "Load delivered" in all_text(find_id(root, "overall"))


def hostile_summary() -> dict[str, Any]:
    s = build_summary()
    s["run_id"] = HOSTILE
    s["status"] = "partial"
    s["status_reason"] = HOSTILE
    s["target"] = {k: HOSTILE for k in ("kind", "gateway", "host", "collector", "backend")}
    s["notes"] = [HOSTILE, "second " + HOSTILE]
    s["mesh"]["expected_services"] = [HOSTILE]
    s["mesh"]["missing_examples"] = [HOSTILE]
    s["mesh"]["leaked_examples"] = [HOSTILE]
    s["mesh"]["spans_per_found_trace"] = {HOSTILE: 1}
    s["sampling"]["prediction"]["examples"] = [HOSTILE]
    s["sampling"]["verdict_basis"] = HOSTILE
    s["reference"]["missing_examples"] = [HOSTILE]
    s["modes"][HOSTILE] = s["modes"].pop("none")
    s["modes"][HOSTILE]["expected_decision"] = HOSTILE
    s["latency_ms"][HOSTILE] = s["latency_ms"].pop("none")
    s["verdicts"][HOSTILE] = "fail"
    s["verdict_details"][HOSTILE] = {
        "verdict": "fail",
        "checked": 1,
        "minimum": 1,
        "basis": HOSTILE,
        "cause": HOSTILE,
    }
    s["tag_search"] = {"tagged_traces": HOSTILE, "decision": {"k": HOSTILE}}
    s["verified_at"] = HOSTILE
    return s


def test_hostile_strings_are_escaped_everywhere_they_appear() -> None:
    summary = hostile_summary()
    ts = ledger_timeseries(RECORDS, 1.0, observations=OBSERVATIONS, expect=EXPECT)
    html = render_html(summary, ts)
    for raw in ("<script", "alert('x')", "\x1b", "\x00", "\u202e", "]]>"):
        assert raw not in html
    root = page(html)
    assert_inert(root, html)
    shown = visible_text(HOSTILE)
    assert root.find(f"{XHTML}head/{XHTML}title").text == f"loadgen run {shown}"  # type: ignore[union-attr]
    assert all_text(find_id(root, "run-id")) == shown
    assert shown in all_text(find_id(root, "partial"))
    meta = all_text(root.find(f".//{XHTML}p[@class='meta']"))  # type: ignore[arg-type]
    assert meta.count(shown) == 4  # kind, gateway, host, backend
    assert shown in all_text(find_id(root, "overall"))  # the failed verdict's name
    extra = [e for e in root.iter(f"{XHTML}article") if (e.get("id") or "").startswith("card-extra-")]
    assert len(extra) == 1 and shown in all_text(extra[0])
    assert extra[0].get("id") == f"card-extra-{shown}"
    assert f"why: {shown}" in all_text(extra[0])  # its cause, escaped
    assert shown in all_text(find_id(root, "why"))
    assert shown in all_text(find_id(root, "card-sampling"))  # the verdict basis
    notes = [all_text(li) for li in find_id(root, "notes").iter(f"{XHTML}li")]
    assert notes == [shown, "second " + shown]
    details = all_text(find_id(root, "details"))
    assert details.count(shown) >= 6  # services, histogram, missing, leaked, mismatches, reference
    rows = [tr for tr in find_id(root, "modes").iter(f"{XHTML}tr")]
    assert any(all_text(tr.find(f"{XHTML}th")) == shown for tr in rows)  # type: ignore[arg-type]
    bars = find_id(root, "chart-modes-latency")
    assert any(all_text(b).startswith(shown + " p50") for b in by_role(bars, "bar"))
    assert any(all_text(t).startswith(shown[:4]) for t in by_role(bars, "xtick"))
    # hostile numbers degrade to n/a instead of breaking the page
    assert "n/a" in details


def test_partial_runs_steps_and_knee() -> None:
    summary = build_summary()
    summary["status"] = "partial"
    summary["status_reason"] = "interrupted"
    # rows as loadgen.capacity writes them to steps.json
    steps: list[dict[str, Any]] = [
        {"label": "100 rps", "users": 10, "target_rps": 100, "achieved_rps": 99, "p50_ms": 2.0, "p99_ms": 5.0,
         "collection": prop(10, 10), "errors": prop(0, 990)},
        {"label": "200 rps", "users": 10, "target_rps": 200, "achieved_rps": 196, "p50_ms": 2.5, "p99_ms": 9.0,
         "collection": prop(99, 100), "errors": prop(0, 1960), "knee": True, "breaches": ["latency"]},
        {"label": HOSTILE, "users": 10, "target_rps": 400, "achieved_rps": 230, "p50_ms": 9.0, "p99_ms": 80.0,
         "collection": prop(90, 100), "errors": prop(23, 2300)},
    ]  # fmt: skip
    html = render_html(summary, None, steps=steps)
    root = page(html)
    assert_inert(root, html)
    assert "interrupted" in all_text(find_id(root, "partial"))
    for chart in ("chart-capacity-throughput", "chart-capacity-latency", "chart-capacity-rates"):
        assert [e.get("data-name") for e in by_role(find_id(root, chart), "vmarker")] == ["knee: 200 rps"]
    assert all_text(find_id(root, "knee")) == "Knee at step 200 rps (latency)."
    achieved, offered = by_role(find_id(root, "chart-capacity-throughput"), "series")
    assert len(path_points(achieved.get("d", ""))) == 3 and offered.get("data-name") == "offered"
    rates = find_id(root, "chart-capacity-rates")
    assert [e.get("data-name") for e in by_role(rates, "band")] == ["collection 95 % CI"]
    # the knee as an index (steps.json's "knee"), also from summary["capacity"]; users on x when
    # a step has no target rate
    for s in steps:
        s.pop("knee", None)
        s.pop("target_rps")
    steps[2]["users"] = 40
    summary["capacity"] = {"steps": steps, "knee": 2}
    html = render_html(summary, None)
    root = page(html)
    assert_inert(root, html)
    knees = [e.get("data-name") for e in by_role(find_id(root, "chart-capacity-latency"), "vmarker")]
    assert knees == [f"knee: {visible_text(HOSTILE)}"]
    assert "users" in all_text(find_id(root, "chart-capacity-latency"))
    summary["capacity"] = {"steps": steps, "knee": None}
    assert "No knee" in all_text(find_id(page(render_html(summary, None)), "knee"))
    # without a time series the over-time charts say so instead of failing
    assert "no data" in all_text(find_id(root, "chart-throughput"))


def test_render_html_shows_evidence_causes_and_header_modes() -> None:
    summary = build_summary()
    root = page(render_html(summary, None))
    # decided not sampled and queried: r2 (absent) and r6 (found: a leak); r0 was never queried
    assert "1 leaked of 2 queried" in all_text(find_id(root, "card-no_leaks"))
    # decided sampled and answered: r1 found, r3 partial, r5 missing -> 3 checked
    assert "checked 3 (minimum 1) · wilson95" in all_text(find_id(root, "card-mesh_collection"))
    # header modes: r3 (forced sampled, traced) and r6 (forced not sampled, yet spans) were
    # checked; r6 broke the "no spans" expectation. r5 (no flag, no injected id) checks nothing.
    card = all_text(find_id(root, "card-header_modes"))
    assert "1 violations" in card and "of 2 answered requests checked" in card
    assert "b3_multi_not_sampled: 1 of 1 produced spans although they must never" in card
    rows = {
        all_text(tr.find(f"{XHTML}th")): [all_text(td) for td in tr.findall(f"{XHTML}td")]  # type: ignore[arg-type]
        for tr in find_id(root, "header-modes").iter(f"{XHTML}tr")
        if tr.find(f"{XHTML}td") is not None
    }
    # expected decision, requests, checked, violations, decision, trace id, request id, leak
    assert rows["b3_multi_not_sampled"] == ["forced not sampled", "1", "1", "1", "0", "0", "0", "1"]
    assert rows["b3_multi_sampled"] == ["forced sampled", "1", "1", "0", "0", "0", "0", "0"]
    why = all_text(find_id(root, "why"))
    assert "Header modes behave as the profile predicts" in why and "Mesh collection rate" in why
    with pytest.raises(AssertionError):
        find_id(root, "card-extra-header_modes")


def test_render_html_says_when_the_tag_search_could_not_estimate() -> None:
    summary = build_summary()
    note = "no mesh trace was found by the run tag (4 reference traces were)"
    summary["tag_search"] = {
        "tagged_traces": 4,
        "tagged_mesh": 0,
        "tagged_reference": 4,
        "decision": None,
        "note": note,
    }
    details = all_text(find_id(page(render_html(summary, None)), "details"))
    assert f"no decision estimate ({note})" in details
    assert "decision estimate 0" not in details


def test_read_back_with_every_poll_failing_is_not_called_still_changing() -> None:
    summary = build_summary()
    summary["readback"] = {
        "quiet_s": 2.0, "stable": False,
        "polls": [{"t": 1.0, "queried": 9, "complete": 0, "errors": 9}, {"t": 2.0, "queried": 9, "complete": 0, "errors": 9}],
    }  # fmt: skip
    details = all_text(find_id(page(render_html(summary, None)), "details"))
    assert "every poll of the backend failed" in details and "still changing" not in details
    summary["readback"]["polls"][0]["errors"] = 0  # counts moved, then the backend failed
    details = all_text(find_id(page(render_html(summary, None)), "details"))
    assert "9 query errors on the last poll" in details and "still changing" not in details
    summary["readback"]["polls"][1]["errors"] = 0
    assert "still changing" in all_text(find_id(page(render_html(summary, None)), "details"))


def test_render_html_tolerates_a_minimal_summary() -> None:
    html = render_html({"run_id": "x"}, {})
    root = page(html)
    assert_inert(root, html)
    assert "NO VERDICTS" in all_text(find_id(root, "overall"))


# --- run folders ------------------------------------------------------------------------------------


def test_load_fetched_normalizes_ids_and_skips_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "fetched.jsonl"
    rows = [
        {"trace": "0" * 16 + "00000000000000ab", "status": "found", "spans": 2, "services": ["a", "b"],
         "run_tagged": 2, "error": None, "complete_at": 5.0},
        {"trace": "CD" * 16, "status": "error", "spans": 0, "services": [], "run_tagged": 0, "error": "503"},
    ]  # fmt: skip
    path.write_text(
        "\n".join(json.dumps(r) for r in rows) + '\n{"trace": "x", "status": "nonsense"}\n{torn\n\n'
    )
    obs = load_fetched(path)
    assert obs == {
        "00000000000000ab": TraceObservation(FetchStatus.FOUND, 2, ("a", "b"), 2, None),
        "cd" * 16: TraceObservation(FetchStatus.ERROR, 0, (), 0, "503"),
    }
    assert load_fetched(tmp_path / "absent.jsonl") == {}


def test_render_run_folder_writes_the_report_and_both_tables(tmp_path: Path) -> None:
    summary = build_summary()
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + '{"torn')
    (tmp_path / "fetched.jsonl").write_text(
        "".join(json.dumps({"trace": t, **o.to_dict()}) + "\n" for t, o in OBSERVATIONS.items())
    )
    written = render_run_folder(tmp_path)
    assert [p.name for p in written] == ["report.html", "modes.csv", "timeseries.csv"]
    root = page((tmp_path / "report.html").read_text())
    collection = find_id(root, "chart-collection")  # needs the observations from fetched.jsonl
    assert by_role(collection, "series")
    assert len(read_csv((tmp_path / "timeseries.csv").read_text())) == 1 + 3
    assert read_csv((tmp_path / "modes.csv").read_text())[0] == MODE_COLUMNS
    assert expectation_from_summary(summary) == EXPECT
    # capacity steps next to the summary (loadgen.capacity writes steps.json) are drawn too
    steps = [
        {"label": f"{u} users", "users": u, "achieved_rps": 10.0 * u, "p99_ms": 1.0 * u} for u in (1, 2, 4)
    ]
    (tmp_path / "steps.json").write_text(json.dumps({"steps": steps, "knee": 1}))
    render_run_folder(tmp_path)
    root = page((tmp_path / "report.html").read_text())
    assert [e.get("data-name") for e in by_role(find_id(root, "chart-capacity-throughput"), "vmarker")] == [
        "knee: 2 users"
    ]
    (tmp_path / "steps.json").unlink()
    # without fetched.jsonl there is no collection chart, and no error
    (tmp_path / "fetched.jsonl").unlink()
    render_run_folder(tmp_path)
    root = page((tmp_path / "report.html").read_text())
    assert "chart-collection" not in {e.get("id") for e in root.iter(f"{SVG}svg")}
    # ... unless the read-back's observations are handed over (a run without --keep-spans)
    render_run_folder(tmp_path, observations=OBSERVATIONS)
    assert by_role(find_id(page((tmp_path / "report.html").read_text()), "chart-collection"), "series")
    assert not list(tmp_path.glob("*.tmp"))
