"""The report's charts over time (throughput, latency, decision and collection rates per
window), per header mode, and time to queryable: summary and timeseries values in, `<figure>`
elements holding inline SVG from `loadgen.report.plots` out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.report import plots
from loadgen.report.html.common import (
    as_dict,
    as_int,
    as_list,
    as_num,
    esc,
    pct_text,
    proportion,
    seconds_text,
)
from loadgen.report.plots import (
    BLUE,
    GREEN,
    INK,
    MUTED,
    ORANGE,
    PURPLE,
    VERMILLION,
    Band,
    BarGroup,
    Frame,
    HLine,
    Series,
    VMarker,
    fmt_pct,
)

CHART = Frame(width=600.0, height=300.0, left=60.0, right=18.0, top=54.0, bottom=46.0)
BARS = Frame(width=600.0, height=300.0, left=60.0, right=18.0, top=54.0, bottom=56.0)


def _windows(timeseries: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [w for w in as_list(timeseries.get("windows")) if isinstance(w, Mapping)]


def _mid(timeseries: Mapping[str, Any]) -> list[float]:
    half = (as_num(timeseries.get("window_s")) or 1.0) / 2.0
    return [(as_num(w.get("t_s")) or 0.0) + half for w in _windows(timeseries)]


def _partial(timeseries: Mapping[str, Any]) -> tuple[float, float, str] | None:
    """The last window when it covers less than a full window (the run ended inside it): its
    stretch of the time axis and a label, for the chart to shade."""
    ws = _windows(timeseries)
    window = as_num(timeseries.get("window_s")) or 1.0
    covered = as_num(ws[-1].get("covered_s")) if ws else None
    start = as_num(ws[-1].get("t_s")) if ws else None
    if covered is None or start is None or covered >= window * 0.999:
        return None
    return start, start + window, f"partial window ({covered:.2g} of {window:g} s)"


def figure(svg: str, caption: str, fig_id: str) -> str:
    return f'<figure class="chart" id="fig-{esc(fig_id)}">{svg}<figcaption>{caption}</figcaption></figure>'


def _throughput_chart(timeseries: Mapping[str, Any]) -> str:
    ws = _windows(timeseries)
    xs = _mid(timeseries)
    rps = [as_num(w.get("rps")) for w in ws]
    window = as_num(timeseries.get("window_s")) or 1.0
    errors = [as_int(w.get("errors")) / window for w in ws]
    sampled = []
    for w, r in zip(ws, rps, strict=True):
        rate, _, _, _, n = proportion(w.get("sampled_fraction"))
        sampled.append(r * rate if r is not None and rate is not None and n else None)
    svg = plots.line_chart(
        chart_id="chart-throughput",
        title="Throughput",
        series=[
            Series("requests/s", xs, rps, BLUE, markers=len(xs) <= 60),
            Series("sampled requests/s", xs, sampled, GREEN, dash="5 3"),
            Series("errors/s", xs, errors, VERMILLION),
        ],
        x_label="seconds since the first request",
        partial=_partial(timeseries),
        y_label="requests per second",
        frame=CHART,
    )
    return figure(
        svg,
        f"Requests started per {window:g}-s window (the last window is scaled to the time it covers, "
        "and shaded when the run ended inside it); "
        "sampled = the upstream saw the sampled flag.",
        "throughput",
    )


def _latency_chart(timeseries: Mapping[str, Any]) -> str:
    ws = _windows(timeseries)
    xs = _mid(timeseries)
    svg = plots.line_chart(
        chart_id="chart-latency",
        title="Latency over time",
        series=[
            Series("p50", xs, [as_num(w.get("p50_ms")) for w in ws], GREEN),
            Series("p95", xs, [as_num(w.get("p95_ms")) for w in ws], ORANGE),
            Series("p99", xs, [as_num(w.get("p99_ms")) for w in ws], VERMILLION, markers=len(xs) <= 60),
        ],
        x_label="seconds since the first request",
        partial=_partial(timeseries),
        y_label="milliseconds",
        frame=CHART,
    )
    return figure(svg, "Latency percentiles of the successful requests started in each window.", "latency")


def _rate_chart(
    *,
    chart_id: str,
    title: str,
    timeseries: Mapping[str, Any],
    key: str,
    overall: object,
    line: tuple[float, str] | None,
    color: str,
    caption: str,
) -> str:
    ws = _windows(timeseries)
    xs = _mid(timeseries)
    rates, lows, highs = [], [], []
    for w in ws:
        rate, low, high, _, _ = proportion(w.get(key))
        rates.append(rate)
        lows.append(low)
        highs.append(high)
    series = [Series("per window", xs, rates, color, markers=len(xs) <= 60)]
    bands = [Band("95 % CI per window", xs, lows, highs, color)]
    o_rate, o_low, o_high, o_k, o_n = proportion(overall)
    note = ""
    if o_rate is not None and xs:
        span = [min(xs), max(xs)]
        series.append(Series("overall", span, [o_rate, o_rate], INK, width=1.5, dash="2 3"))
        bands.append(Band("overall 95 % CI", span, [o_low, o_low], [o_high, o_high], MUTED, opacity=0.14))
        note = f"overall {pct_text(o_rate)} (k={o_k:,}, n={o_n:,})"
    hlines = [HLine(line[0], line[1], VERMILLION, dash="7 4")] if line else []
    svg = plots.line_chart(
        chart_id=chart_id,
        title=title,
        series=series,
        bands=bands,
        hlines=hlines,
        x_label="seconds since the first request",
        partial=_partial(timeseries),
        y_label="rate",
        y_clamp=(0.0, 1.0),
        y_format=fmt_pct,
        frame=CHART,
        note=note,
    )
    return figure(svg, caption, chart_id.removeprefix("chart-"))


def _modes_latency_chart(summary: Mapping[str, Any]) -> str:
    latency = as_dict(summary.get("latency_ms"))
    cats = [str(m) for m in latency]
    groups = [
        BarGroup(name, [as_num(as_dict(latency[m]).get(key)) for m in latency], color)
        for name, key, color in (("p50", "p50", GREEN), ("p95", "p95", ORANGE), ("p99", "p99", VERMILLION))
    ]
    svg = plots.bar_chart(
        chart_id="chart-modes-latency",
        title="Latency per header mode",
        categories=cats,
        groups=groups,
        y_label="milliseconds",
        frame=BARS,
    )
    return figure(svg, "Successful requests of the whole run, per header mode.", "modes-latency")


def _queryable_chart(summary: Mapping[str, Any]) -> str:
    q = as_dict(summary.get("queryable"))
    curve = [p for p in as_list(q.get("curve")) if isinstance(p, Mapping)]
    if not curve:
        return ""
    xs = [as_num(p.get("t_s")) or 0.0 for p in curve]
    ys = [as_num(p.get("fraction")) for p in curve]
    # The curve starts at zero when the last request ended.
    xs, ys = [0.0, *xs], [0.0, *ys]
    markers = [
        VMarker(t, label, color)
        for label, key, color in (
            ("t50", "t50_s", GREEN),
            ("t99", "t99_s", ORANGE),
            ("t100", "t100_s", PURPLE),
        )
        if (t := as_num(q.get(key))) is not None
    ]
    # Markers at the same time would print over each other: keep the last label of each time.
    by_time: dict[float, VMarker] = {}
    for m in markers:
        prev = by_time.get(m.x)
        by_time[m.x] = VMarker(m.x, f"{prev.label}/{m.label}" if prev else m.label, m.color)
    svg = plots.line_chart(
        chart_id="chart-queryable",
        title="Time to queryable",
        series=[
            Series("complete traces (fraction of final)", xs, ys, BLUE, step=True, markers=len(xs) <= 60)
        ],
        vmarkers=list(by_time.values()),
        x_label="seconds after the last request ended",
        y_label="fraction queryable",
        y_domain=(0.0, 1.0),
        y_format=fmt_pct,
        frame=CHART,
    )
    return figure(
        svg,
        f"Found fraction per read-back poll (resolution {esc(seconds_text(q.get('resolution_s')))}: "
        "each time is an upper bound).",
        "queryable",
    )


def charts_section(summary: Mapping[str, Any], timeseries: Mapping[str, Any]) -> str:
    sampling = as_dict(summary.get("sampling"))
    conf = as_num(sampling.get("configured_percent"))
    min_collection = as_num(summary.get("min_collection"))
    figures = [_throughput_chart(timeseries), _latency_chart(timeseries)]
    figures.append(
        _rate_chart(
            chart_id="chart-decision",
            title="Decision rate (no-flag requests)",
            timeseries=timeseries,
            key="decision",
            overall=sampling.get("decision"),
            line=(conf / 100.0, f"configured {conf:g} %") if conf is not None else None,
            color=BLUE,
            caption="Fraction of the requests that carried no sampling decision which the upstream saw sampled, "
            "per window with its Wilson 95 % interval, and over the whole run, against the configured percentage.",
        )
    )
    if any(w.get("collection") is not None for w in _windows(timeseries)):
        figures.append(
            _rate_chart(
                chart_id="chart-collection",
                title="Mesh collection rate",
                timeseries=timeseries,
                key="collection",
                overall=as_dict(summary.get("mesh")).get("collection"),
                line=(min_collection, f"minimum {min_collection * 100:g} %")
                if min_collection is not None
                else None,
                color=GREEN,
                caption="Traces found complete / requests decided sampled, by the window in which the request started "
                "(unknown outcomes excluded, as in the summary).",
            )
        )
    figures.append(_modes_latency_chart(summary))
    queryable = _queryable_chart(summary)
    if queryable:
        figures.append(queryable)
    return (
        '<section id="charts"><h2>Over time</h2><div class="charts">' + "".join(figures) + "</div></section>"
    )
