"""The self-contained HTML report of a run (`report.html`).

`render_html(summary, timeseries)` is pure: summary.json's dict and `ledger_timeseries`'s dict in,
one HTML document out. The document has no script, loads nothing (a Content-Security-Policy of
`default-src 'none'` says so to the browser too), and draws its charts as inline SVG built by
`loadgen.report.plots`, so it opens offline from a CI artifact or an e-mail attachment.

Everything that is text in the summary (run id, target URLs, mode names, trace ids, notes, tag
values, even verdict names) is untrusted: it is escaped with `xml_escape`, which also turns
control and invisible characters into visible escapes. The markup is well-formed XML (void
elements closed, only numeric character references), so tests parse the whole page with
`xml.etree` and look for anything that escaped.

`render_run_folder(run_dir)` is the I/O around it: it reads summary.json, ledger.jsonl and
fetched.jsonl and writes report.html, modes.csv and timeseries.csv next to them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadgen import __version__
from loadgen.analysis.verdicts import describe_error
from loadgen.ledger import read_ledger
from loadgen.redact import redact_data
from loadgen.report import plots
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
    xml_escape,
)
from loadgen.report.profile_view import PROFILE_TITLE, profile_facts_rows, profile_source_line
from loadgen.report.render import (
    HEADER_MODE_COLUMNS,
    _headline_rows,
    header_mode_rows,
    header_mode_totals,
    verdict_causes,
)
from loadgen.report.tables import expectation_from_summary, ledger_timeseries, modes_csv, timeseries_csv
from loadgen.runfiles import load_fetched

esc = xml_escape

CHART = Frame(width=600.0, height=300.0, left=60.0, right=18.0, top=54.0, bottom=46.0)
BARS = Frame(width=600.0, height=300.0, left=60.0, right=18.0, top=54.0, bottom=56.0)

VERDICT_TITLES = {
    "load_delivered": "Load delivered",
    "sampling": "Sampling decision rate",
    "sampling_prediction": "x-request-id rule",
    "mesh_collection": "Mesh collection rate",
    "no_leaks": "No leaked traces",
    "reference_collection": "Reference collection rate",
    "propagation_integrity": "Propagation integrity",
    "header_modes": "Header modes behave as the profile predicts",
}


# --- small formatting helpers (robust against a hand-edited summary) ------------------------------


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _int(value: object) -> int:
    f = _num(value)
    return int(f) if f is not None else 0


def _pct(value: object, digits: int = 2) -> str:
    f = _num(value)
    if f is None:
        return "n/a"
    text = f"{f * 100:.{digits}f}"
    return f"{text} %"


def _ms(value: object) -> str:
    f = _num(value)
    return "–" if f is None else (f"{f:.1f}" if f >= 10 else f"{f:.2f}")


def _seconds(value: object) -> str:
    f = _num(value)
    return "n/a" if f is None else f"{f:.2f} s"


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def _prop(p: object) -> tuple[float | None, float | None, float | None, int, int]:
    """(rate, low, high, k, n) of a `{k, n, rate, ci95}` dict; Nones when nothing was measured."""
    d = _dict(p)
    k, n = _int(d.get("k")), _int(d.get("n"))
    ci = _list(d.get("ci95"))
    low = _num(ci[0]) if len(ci) == 2 else None
    high = _num(ci[1]) if len(ci) == 2 else None
    if not n:
        return (None, None, None, k, n)
    return (_num(d.get("rate")), low, high, k, n)


def _ci_text(p: object) -> str:
    rate, low, high, k, n = _prop(p)
    if rate is None:
        return "nothing measured (n = 0)"
    return f"95 % CI {_pct(low)} – {_pct(high)} · k = {k:,} of n = {n:,}"


def _ci_short(p: object) -> str:
    """`95 % CI 18.26 – 20.92 %` (or why there is none)."""
    rate, low, high, _, _ = _prop(p)
    if rate is None or low is None or high is None:
        return "nothing measured (n = 0)"
    return f"95 % CI {low * 100:.2f} – {high * 100:.2f} %"


def _k_of_n(p: object, what: str) -> str:
    _, _, _, k, n = _prop(p)
    return f"{k:,} of {n:,} {esc(what)}"


def _utc(epoch: object) -> str:
    f = _num(epoch)
    if f is None:
        return "unknown time"
    try:
        return datetime.fromtimestamp(f, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return "unknown time"


def _verdict_class(verdict: object) -> str:
    return {"pass": "pass", "fail": "fail", "inconclusive": "inconclusive"}.get(str(verdict), "info")


def _badge(verdict: object) -> str:
    return f'<span class="badge {_verdict_class(verdict)}">{esc(verdict)}</span>'


# --- headline ---------------------------------------------------------------------------------------


def _overall(summary: Mapping[str, Any]) -> str:
    verdicts = {str(k): str(v) for k, v in _dict(summary.get("verdicts")).items()}
    failed = [k for k, v in verdicts.items() if v == "fail"]
    unsure = [k for k, v in verdicts.items() if v == "inconclusive"]
    if failed:
        cls, word = "fail", "FAIL"
        detail = "failed: " + ", ".join(VERDICT_TITLES.get(k, k) for k in failed)
    elif unsure:
        cls, word = "inconclusive", "INCONCLUSIVE"
        detail = "inconclusive: " + ", ".join(VERDICT_TITLES.get(k, k) for k in unsure)
    elif verdicts:
        cls, word = "pass", "PASS"
        detail = f"all {len(verdicts)} verdicts passed"
    else:
        cls, word, detail = "info", "NO VERDICTS", "the summary has no verdicts"
    partial = ""
    if summary.get("status", "complete") != "complete":
        partial = (
            f'<p class="partial" id="partial"><strong>Partial run</strong> ({esc(summary.get("status_reason") or summary.get("status"))}): '
            "numbers cover what was sent before the stop; unqueried traces are <em>unknown</em>, not missing.</p>"
        )
    return (
        f'<section class="overall {cls}" id="overall"><span class="word">{word}</span>'
        f'<span class="detail">{esc(detail)}</span></section>{partial}'
    )


def _card(
    title: str,
    big: str,
    lines: Sequence[str],
    verdict: object | None,
    card_id: str,
    detail: Mapping[str, Any] | None = None,
) -> str:
    """A headline card: title, the number large (its unit after the first space smaller), the
    verdict badge, lines of (already escaped) detail, and from the verdict's `detail`
    (summary["verdict_details"]) how much it checked and, unless it passed, why."""
    cls = _verdict_class(verdict) if verdict is not None else "info"
    badge = _badge(verdict) if verdict is not None else ""
    value, _, unit = big.partition(" ")
    unit_html = f" <small>{esc(unit)}</small>" if unit else ""
    lines = list(lines)
    if detail:
        lines.append(
            f'<span class="evidence">checked {_int(detail.get("checked")):,} (minimum '
            f"{_int(detail.get('minimum')):,}) · {esc(detail.get('basis') or '?')}</span>"
        )
        if detail.get("cause"):
            lines.append(f'<span class="cause">why: {esc(detail.get("cause"))}</span>')
    body = "".join(f"<p>{line}</p>" for line in lines)
    return (
        f'<article class="card {cls}" id="card-{esc(card_id)}"><h3>{esc(title)}</h3>'
        f'<div class="row"><div class="big">{esc(value)}{unit_html}</div>{badge}</div>{body}</article>'
    )


def _cards(summary: Mapping[str, Any], timeseries: Mapping[str, Any]) -> str:
    verdicts = _dict(summary.get("verdicts"))
    details = _dict(summary.get("verdict_details"))
    sampling = _dict(summary.get("sampling"))
    mesh = _dict(summary.get("mesh"))
    ref = _dict(summary.get("reference"))
    modes = _dict(summary.get("modes"))
    cards: list[str] = []
    done: set[str] = set()

    def add(key: str, title: str, big: str, lines: Sequence[str]) -> None:
        done.add(key)
        verdict = verdicts.get(key) if key in verdicts else None
        cards.append(_card(title, big, lines, verdict, key, _dict(details.get(key))))

    if "load_delivered" in verdicts:
        requests = _dict(summary.get("requests"))
        total, failed = _int(requests.get("total")), _int(requests.get("errors"))
        limit = _num(summary.get("max_error_rate"))
        top = [_dict(e) for e in requests.get("top_errors") or [] if isinstance(e, Mapping)]
        lines = [
            f"{failed:,} of {total:,} requests failed"
            + (f" · maximum {esc(_pct(limit, 1))}" if limit is not None else "")
        ]
        if top:
            lines.append(f"most common: {esc(describe_error(top[0]))} ×{_int(top[0].get('count')):,}")
        big = f"{_pct(failed / total)} errors" if total else "0 requests"
        add("load_delivered", VERDICT_TITLES["load_delivered"], big, lines)
    conf = _num(sampling.get("configured_percent"))
    basis = sampling.get("verdict_basis")
    pvalue = _num(sampling.get("p_value"))
    add(
        "sampling",
        VERDICT_TITLES["sampling"],
        _pct(_prop(sampling.get("decision"))[0]),
        [
            esc(_ci_short(sampling.get("decision"))),
            _k_of_n(sampling.get("decision"), "no-flag requests sampled"),
            "configured "
            + (esc(f"{conf:g} %") if conf is not None else "<em>unknown</em>")
            + f" · {esc(basis or 'n/a')}"
            + (f" · p = {pvalue:.3g}" if pvalue is not None else ""),
        ],
    )
    pred = _dict(sampling.get("prediction"))
    if "sampling_prediction" in verdicts or _int(pred.get("checked")):
        add(
            "sampling_prediction",
            VERDICT_TITLES["sampling_prediction"],
            f"{_int(pred.get('mismatches')):,} mismatches",
            [f"of {_int(pred.get('checked')):,} decisions checked against Envoy's x-request-id rule"],
        )
    min_collection = _num(summary.get("min_collection"))
    add(
        "mesh_collection",
        VERDICT_TITLES["mesh_collection"],
        _pct(_prop(mesh.get("collection"))[0]),
        [
            esc(_ci_short(mesh.get("collection"))),
            _k_of_n(mesh.get("collection"), "sampled traces complete"),
            f"partial {_int(mesh.get('partial')):,} · unknown {_int(mesh.get('unknown')):,}"
            + (f" · minimum {esc(_pct(min_collection, 1))}" if min_collection is not None else ""),
        ],
    )
    not_sampled = sum(_int(_dict(m).get("decided_not_sampled")) for m in modes.values())
    leak_lines = [f"traces found among {not_sampled:,} requests decided <em>not</em> sampled"]
    if "leak_checked" in mesh:
        leak_lines.insert(
            0, f"{_int(mesh.get('leaked')):,} leaked of {_int(mesh.get('leak_checked')):,} queried"
        )
    add("no_leaks", VERDICT_TITLES["no_leaks"], f"{_int(mesh.get('leaked')):,} leaked", leak_lines)
    if "reference_collection" in verdicts or _int(ref.get("started")):
        add(
            "reference_collection",
            VERDICT_TITLES["reference_collection"],
            _pct(_prop(ref.get("collection"))[0]),
            [
                esc(_ci_short(ref.get("collection"))),
                _k_of_n(ref.get("collection"), "exported traces complete"),
                f"partial {_int(ref.get('partial')):,} · failed {_int(ref.get('failed')):,} · "
                f"dropped {_int(ref.get('dropped')):,}",
            ],
        )
    if "header_modes" in verdicts:
        checked, violations = header_mode_totals(dict(summary))
        add(
            "header_modes",
            VERDICT_TITLES["header_modes"],
            f"{violations:,} violations",
            [f"of {checked:,} answered requests checked against what the mesh profile predicts"],
        )
    for key, verdict in verdicts.items():  # verdicts this renderer does not know yet
        if str(key) not in done:
            title = VERDICT_TITLES.get(str(key), str(key).replace("_", " ").capitalize())
            cards.append(_card(title, str(verdict), [], verdict, f"extra-{key}", _dict(details.get(key))))
    verdict_cards, cards = cards, []
    # Information cards (no verdict of their own).
    requests = _dict(summary.get("requests"))
    total, errors = _int(requests.get("total")), _int(requests.get("errors"))
    first, last = _num(requests.get("first_ts")), _num(requests.get("last_ts"))
    duration = (last - first) if first is not None and last is not None and last > first else None
    rps = f"{total / duration:,.0f} req/s" if duration else "n/a"
    cards.append(
        _card(
            "Throughput",
            rps,
            [
                f"{total:,} requests in {esc(_seconds(duration))}",
                f"{errors:,} errors ({esc(_pct(errors / total if total else None))})",
            ],
            None,
            "throughput",
        )
    )
    latency = _dict(summary.get("latency_ms"))
    worst = max(
        ((str(m), _num(_dict(v).get("p99"))) for m, v in latency.items()),
        key=lambda mv: mv[1] if mv[1] is not None else -1.0,
        default=("", None),
    )
    cards.append(
        _card(
            "Latency p99 (worst mode)",
            f"{_ms(worst[1])} ms",
            [f"mode <code>{esc(worst[0])}</code>" if worst[0] else "no successful request"],
            None,
            "latency",
        )
    )
    q = _dict(summary.get("queryable"))
    if q:
        cards.append(
            _card(
                "Time to queryable (t99)",
                _seconds(q.get("t99_s")),
                [
                    f"t50 {esc(_seconds(q.get('t50_s')))} · t100 {esc(_seconds(q.get('t100_s')))} "
                    f"after the last request · {_int(q.get('traces')):,} traces",
                    f"resolution {esc(_seconds(q.get('resolution_s')))} (one poll)",
                ],
                None,
                "queryable",
            )
        )
    prop = _dict(summary.get("propagation"))
    if prop:
        backend = _dict(prop.get("backend"))
        cards.append(
            _card(
                "Injected trace ids kept",
                _pct(_prop(prop)[0]),
                [
                    f"upstream {_int(prop.get('k')):,} of {_int(prop.get('n')):,}",
                    f"found under the injected id {_int(backend.get('k')):,} of {_int(backend.get('n')):,}",
                ],
                None,
                "propagation",
            )
        )
    return (
        '<section class="cards" id="cards">'
        + "".join(verdict_cards)
        + '</section><section class="cards info" id="info-cards">'
        + "".join(cards)
        + "</section>"
    )


# --- charts -----------------------------------------------------------------------------------------


def _windows(timeseries: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [w for w in _list(timeseries.get("windows")) if isinstance(w, Mapping)]


def _mid(timeseries: Mapping[str, Any]) -> list[float]:
    half = (_num(timeseries.get("window_s")) or 1.0) / 2.0
    return [(_num(w.get("t_s")) or 0.0) + half for w in _windows(timeseries)]


def _figure(svg: str, caption: str, fig_id: str) -> str:
    return f'<figure class="chart" id="fig-{esc(fig_id)}">{svg}<figcaption>{caption}</figcaption></figure>'


def _throughput_chart(timeseries: Mapping[str, Any]) -> str:
    ws = _windows(timeseries)
    xs = _mid(timeseries)
    rps = [_num(w.get("rps")) for w in ws]
    window = _num(timeseries.get("window_s")) or 1.0
    errors = [_int(w.get("errors")) / window for w in ws]
    sampled = []
    for w, r in zip(ws, rps, strict=True):
        rate, _, _, _, n = _prop(w.get("sampled_fraction"))
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
        y_label="requests per second",
        frame=CHART,
    )
    return _figure(
        svg,
        f"Requests started per {window:g}-s window (the last window is scaled to the time it covers); "
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
            Series("p50", xs, [_num(w.get("p50_ms")) for w in ws], GREEN),
            Series("p95", xs, [_num(w.get("p95_ms")) for w in ws], ORANGE),
            Series("p99", xs, [_num(w.get("p99_ms")) for w in ws], VERMILLION, markers=len(xs) <= 60),
        ],
        x_label="seconds since the first request",
        y_label="milliseconds",
        frame=CHART,
    )
    return _figure(svg, "Latency percentiles of the successful requests started in each window.", "latency")


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
        rate, low, high, _, _ = _prop(w.get(key))
        rates.append(rate)
        lows.append(low)
        highs.append(high)
    series = [Series("per window", xs, rates, color, markers=len(xs) <= 60)]
    bands = [Band("95 % CI per window", xs, lows, highs, color)]
    o_rate, o_low, o_high, o_k, o_n = _prop(overall)
    note = ""
    if o_rate is not None and xs:
        span = [min(xs), max(xs)]
        series.append(Series("overall", span, [o_rate, o_rate], INK, width=1.5, dash="2 3"))
        bands.append(Band("overall 95 % CI", span, [o_low, o_low], [o_high, o_high], MUTED, opacity=0.14))
        note = f"overall {_pct(o_rate)} (k={o_k:,}, n={o_n:,})"
    hlines = [HLine(line[0], line[1], VERMILLION, dash="7 4")] if line else []
    svg = plots.line_chart(
        chart_id=chart_id,
        title=title,
        series=series,
        bands=bands,
        hlines=hlines,
        x_label="seconds since the first request",
        y_label="rate",
        y_clamp=(0.0, 1.0),
        y_format=fmt_pct,
        frame=CHART,
        note=note,
    )
    return _figure(svg, caption, chart_id.removeprefix("chart-"))


def _modes_latency_chart(summary: Mapping[str, Any]) -> str:
    latency = _dict(summary.get("latency_ms"))
    cats = [str(m) for m in latency]
    groups = [
        BarGroup(name, [_num(_dict(latency[m]).get(key)) for m in latency], color)
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
    return _figure(svg, "Successful requests of the whole run, per header mode.", "modes-latency")


def _queryable_chart(summary: Mapping[str, Any]) -> str:
    q = _dict(summary.get("queryable"))
    curve = [p for p in _list(q.get("curve")) if isinstance(p, Mapping)]
    if not curve:
        return ""
    xs = [_num(p.get("t_s")) or 0.0 for p in curve]
    ys = [_num(p.get("fraction")) for p in curve]
    # The curve starts at zero when the last request ended.
    xs, ys = [0.0, *xs], [0.0, *ys]
    markers = [
        VMarker(t, label, color)
        for label, key, color in (
            ("t50", "t50_s", GREEN),
            ("t99", "t99_s", ORANGE),
            ("t100", "t100_s", PURPLE),
        )
        if (t := _num(q.get(key))) is not None
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
    return _figure(
        svg,
        f"Found fraction per read-back poll (resolution {esc(_seconds(q.get('resolution_s')))}: "
        "each time is an upper bound).",
        "queryable",
    )


def _capacity_charts(steps: Sequence[Mapping[str, Any]], knee: int | None) -> str:
    """Capacity steps (loadgen.capacity's steps.json rows): achieved vs offered throughput, p99,
    and collection/error rates per step, each with a marker at the knee step.

    x is the step's `target_rps` when every step has one (a rate plan), else its `users`. The
    knee is the step at index `knee`, else the step carrying `knee: true`."""
    use_rate = all(_num(s.get("target_rps")) is not None for s in steps)
    key = "target_rps" if use_rate else "users"
    pts = [(x, i, s) for i, s in enumerate(steps) if (x := _num(s.get(key))) is not None]
    if not pts:
        return ""
    xs = [x for x, _, _ in pts]
    if knee is None:
        knee = next((i for i, s in enumerate(steps) if s.get("knee") is True), None)
    knee_step = steps[knee] if knee is not None and 0 <= knee < len(steps) else None
    knee_x = _num(knee_step.get(key)) if knee_step is not None else None
    vmarkers = []
    if knee_step is not None and knee_x is not None:
        label = knee_step.get("label")
        vmarkers.append(VMarker(knee_x, f"knee: {label}" if label else f"knee {knee_x:g}", VERMILLION))
    x_label = "offered load (req/s)" if use_rate else "users"
    throughput = plots.line_chart(
        chart_id="chart-capacity-throughput",
        title="Capacity: throughput",
        series=[
            Series("achieved req/s", xs, [_num(s.get("achieved_rps")) for _, _, s in pts], BLUE, markers=True)
        ]
        + ([Series("offered", xs, xs, MUTED, width=1.0, dash="3 3")] if use_rate else []),
        vmarkers=vmarkers,
        x_label=x_label,
        y_label="requests per second",
        frame=CHART,
    )
    latency = plots.line_chart(
        chart_id="chart-capacity-latency",
        title="Capacity: latency",
        series=[
            Series("p50", xs, [_num(s.get("p50_ms")) for _, _, s in pts], GREEN, markers=True),
            Series("p99", xs, [_num(s.get("p99_ms")) for _, _, s in pts], VERMILLION, markers=True),
        ],
        vmarkers=vmarkers,
        x_label=x_label,
        y_label="milliseconds",
        frame=CHART,
    )

    def rate_of(value: object) -> tuple[float | None, float | None, float | None]:
        if isinstance(value, Mapping):
            rate, low, high, _, _ = _prop(value)
            return rate, low, high
        f = _num(value)
        return f, None, None

    coll = [rate_of(s.get("collection")) for _, _, s in pts]
    errs = [
        rate_of(s.get("errors")) if isinstance(s.get("errors"), Mapping) else (None, None, None)
        for _, _, s in pts
    ]
    rates = plots.line_chart(
        chart_id="chart-capacity-rates",
        title="Capacity: collection and errors",
        series=[
            Series("mesh collection", xs, [c[0] for c in coll], GREEN, markers=True),
            Series("error rate", xs, [e[0] for e in errs], VERMILLION, markers=True),
        ],
        bands=[Band("collection 95 % CI", xs, [c[1] for c in coll], [c[2] for c in coll], GREEN)],
        vmarkers=vmarkers,
        x_label=x_label,
        y_label="rate",
        y_clamp=(0.0, 1.0),
        y_format=fmt_pct,
        frame=CHART,
    )
    knee_text = "No knee: every step stayed within the bounds."
    if knee_step is not None:
        breaches = ", ".join(str(b) for b in _list(knee_step.get("breaches")))
        knee_text = f"Knee at step {esc(knee_step.get('label') or knee)}" + (
            f" ({esc(breaches)})." if breaches else "."
        )
    return (
        f'<section id="capacity"><h2>Capacity</h2><p class="hint" id="knee">{knee_text}</p><div class="charts">'
        + _figure(
            throughput,
            "Achieved throughput per step; past the knee it stops following the offered load.",
            "capacity-throughput",
        )
        + _figure(latency, "Latency percentiles per step.", "capacity-latency")
        + _figure(
            rates, "Mesh collection rate (Wilson 95 % interval) and error rate per step.", "capacity-rates"
        )
        + "</div></section>"
    )


def _charts(summary: Mapping[str, Any], timeseries: Mapping[str, Any]) -> str:
    sampling = _dict(summary.get("sampling"))
    conf = _num(sampling.get("configured_percent"))
    min_collection = _num(summary.get("min_collection"))
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
                overall=_dict(summary.get("mesh")).get("collection"),
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


# --- tables -----------------------------------------------------------------------------------------

_MODE_COLS = (
    ("requests", "requests"),
    ("errors", "errors"),
    ("decided_sampled", "sampled"),
    ("found", "found"),
    ("partial", "partial"),
    ("missing", "missing"),
    ("leaked", "leaked"),
    ("not_sampled", "not sampled"),
    ("unknown", "unknown"),
    ("expectation_violations", "violations"),
)
_BAD_IF_NONZERO = {
    "errors": "warn",
    "partial": "warn",
    "missing": "bad",
    "leaked": "bad",
    "expectation_violations": "bad",
    "unknown": "warn",
}


def _modes_table(summary: Mapping[str, Any]) -> str:
    modes = _dict(summary.get("modes"))
    latency = _dict(summary.get("latency_ms"))
    head = "".join(f'<th class="num">{esc(label)}</th>' for _, label in _MODE_COLS)
    rows = []
    for mode, m in modes.items():
        m = _dict(m)
        lat = _dict(latency.get(mode))
        cells = []
        for key, _ in _MODE_COLS:
            v = _int(m.get(key))
            cls = "num " + _BAD_IF_NONZERO[key] if v and key in _BAD_IF_NONZERO else "num"
            cells.append(f'<td class="{cls}">{v:,}</td>')
        cells += [f'<td class="num">{esc(_ms(lat.get(q)))}</td>' for q in ("p50", "p95", "p99")]
        rows.append(
            f"<tr><th><code>{esc(mode)}</code></th><td>{esc(str(m.get('expected_decision') or '?').replace('_', ' '))}</td>"
            + "".join(cells)
            + "</tr>"
        )
    return (
        '<section id="modes"><h2>Per header mode</h2><div class="scroll"><table class="modes">'
        f"<thead><tr><th>mode</th><th>expected decision</th>{head}"
        '<th class="num">p50 ms</th><th class="num">p95 ms</th><th class="num">p99 ms</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        '<p class="hint">sampled = the upstream saw the sampled flag; found/partial/missing are of those; '
        "leaked = found although decided not sampled; unknown = never successfully queried. "
        "Also in <code>modes.csv</code>.</p></section>"
    )


def _header_modes_table(summary: Mapping[str, Any]) -> str:
    """Per mode with a definite expectation: requests, how many were checked, and the violations
    by kind (empty when there is nothing to check)."""
    try:
        rows = header_mode_rows(dict(summary))
    except (KeyError, TypeError, ValueError):
        return ""
    if not rows:
        return ""
    num = ' class="num"'
    head = "".join(
        f"<th{'' if i < 2 else num}>{esc(c.replace('_', ' '))}</th>"
        for i, c in enumerate(HEADER_MODE_COLUMNS)
    )
    body = []
    for mode, expected, *counts in rows:
        cells = "".join(
            f'<td class="num{" bad" if i >= 2 and c else ""}">{_int(c):,}</td>' for i, c in enumerate(counts)
        )
        body.append(
            f"<tr><th><code>{esc(mode)}</code></th><td>{esc(str(expected).replace('_', ' '))}</td>{cells}</tr>"
        )
    return (
        '<section id="header-modes"><h2>Header modes vs the profile</h2><div class="scroll">'
        f'<table class="modes"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
        '<p class="hint">checked = answered requests whose answer showed at least one definite expectation '
        "(the decision a header forces, a trace id or x-request-id kept or replaced, no spans at all); "
        "violations = checked requests that broke one, by kind.</p></section>"
    )


def _profile(summary: Mapping[str, Any]) -> str:
    """What the probe learned about the mesh: the facts that set the expectations."""
    profile = _dict(summary.get("profile"))
    rows = profile_facts_rows(profile)
    if not rows:
        return ""
    body = "".join(
        f'<tr><th>{esc(name)}</th><td class="{"" if learned else "bad"}">{esc(value)}'
        f"{'' if learned else ' (not learned)'}</td><td>{esc(evidence)}</td></tr>"
        for name, value, learned, evidence in rows
    )
    notes = "".join(f"<li>{esc(n)}</li>" for n in profile.get("notes") or ())
    return (
        f'<section id="profile"><h2>{esc(PROFILE_TITLE)}</h2><p class="hint">{esc(profile_source_line(profile))}</p>'
        '<div class="scroll"><table class="numbers"><thead><tr><th>fact</th><th>learned</th><th>evidence</th>'
        f"</tr></thead><tbody>{body}</tbody></table></div>"
        + (f'<ul class="notes">{notes}</ul>' if notes else "")
        + "</section>"
    )


def _why(summary: Mapping[str, Any]) -> str:
    """Every verdict that did not pass, with its evidence and most likely cause."""
    try:
        causes = verdict_causes(dict(summary))
    except (KeyError, TypeError, ValueError):
        return ""
    if not causes:
        return ""
    items = "".join(
        f"<li>{_badge(verdict)} <strong>{esc(VERDICT_TITLES.get(name, name))}</strong> "
        f'<span class="evidence">({esc(evidence)})</span>: {esc(cause)}</li>'
        for name, verdict, evidence, cause in causes
    )
    return f'<section id="why"><h2>Why</h2><ul class="why">{items}</ul></section>'


def _numbers_table(summary: Mapping[str, Any]) -> str:
    try:
        rows = _headline_rows(dict(summary))
    except (KeyError, TypeError, ValueError, IndexError):
        return ""
    body = "".join(
        f"<tr><th>{esc(name)}</th><td>{esc(value)}</td><td>{_badge(verdict) if verdict else ''}</td></tr>"
        for name, value, verdict in rows
    )
    return (
        '<section id="numbers"><h2>All numbers</h2><div class="scroll"><table class="numbers">'
        "<thead><tr><th>measure</th><th>value (rate [95 % CI] (k, n))</th><th>verdict</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div></section>"
    )


def _codes(values: object) -> str:
    return ", ".join(f"<code>{esc(v)}</code>" for v in _list(values)) or "none"


def _details(summary: Mapping[str, Any]) -> str:
    mesh = _dict(summary.get("mesh"))
    parts = ['<section id="details"><h2>Completeness and details</h2><dl>']
    services = ", ".join(f"<code>{esc(s)}</code>" for s in _list(mesh.get("expected_services"))) or "?"
    parts.append(
        f"<dt>complete trace</dt><dd>{_int(mesh.get('expected_spans_per_trace'))} spans from {services}</dd>"
    )
    hist = _dict(mesh.get("spans_per_found_trace"))
    hist_text = ", ".join(f"{esc(k)} spans: {_int(v):,}" for k, v in hist.items()) or "none"
    parts.append(f"<dt>spans per found trace</dt><dd>{hist_text}</dd>")
    tag = _dict(mesh.get("run_tag"))
    parts.append(
        f"<dt>spans tagged with this run id</dt><dd>{_int(tag.get('k')):,} of {_int(tag.get('n')):,}</dd>"
    )
    parts.append(f"<dt>missing trace ids (examples)</dt><dd>{_codes(mesh.get('missing_examples'))}</dd>")
    parts.append(f"<dt>leaked trace ids (examples)</dt><dd>{_codes(mesh.get('leaked_examples'))}</dd>")
    pred = _dict(_dict(summary.get("sampling")).get("prediction"))
    if _list(pred.get("examples")):
        parts.append(f"<dt>rule mismatches (request ids)</dt><dd>{_codes(pred.get('examples'))}</dd>")
    ref = _dict(summary.get("reference"))
    if _list(ref.get("missing_examples")):
        parts.append(f"<dt>missing reference traces</dt><dd>{_codes(ref.get('missing_examples'))}</dd>")
    tags = summary.get("tag_search")
    if isinstance(tags, Mapping):
        dec = _dict(tags.get("decision"))
        estimate = (
            f"decision estimate {esc(_pct(_prop(dec)[0]))} ({esc(_ci_text(dec))})"
            if dec
            else f"no decision estimate ({esc(tags.get('note') or 'nothing could be attributed')})"
        )
        parts.append(
            "<dt>run-tag search</dt><dd>"
            f"{_int(tags.get('tagged_traces')):,} traces tagged ({_int(tags.get('tagged_mesh')):,} mesh, "
            f"{_int(tags.get('tagged_reference')):,} reference); {estimate}</dd>"
        )
    readback = _dict(summary.get("readback"))
    if readback:
        polls = [_dict(p) for p in _list(readback.get("polls"))]
        failed = [
            p for p in polls if _int(p.get("queried")) and _int(p.get("errors")) >= _int(p.get("queried"))
        ]
        if readback.get("stable") is True:
            state = "stable"
        elif polls and len(failed) == len(polls):
            state = "<strong>every poll of the backend failed</strong>: traces are unknown"
        elif polls and _int(polls[-1].get("errors")):
            state = f"<strong>{_int(polls[-1].get('errors')):,} query errors on the last poll</strong>"
        else:
            state = "<strong>still changing</strong>"
        parts.append(
            f"<dt>read-back</dt><dd>{len(polls)} polls, quiet period "
            f"{esc(_seconds(readback.get('quiet_s')))}, {state}</dd>"
        )
    parts.append("</dl></section>")
    notes = _list(summary.get("notes"))
    if notes:
        parts.append(
            '<section id="notes"><h2>Notes</h2><ul class="notes">'
            + "".join(f"<li>{esc(n)}</li>" for n in notes)
            + "</ul></section>"
        )
    return "".join(parts)


# --- the page ---------------------------------------------------------------------------------------

CSS = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --bg: #f5f7fa;
  --pass: #0b7a53; --pass-bg: #e3f6ee; --fail: #b42318; --fail-bg: #fdecea;
  --unsure: #8a5a00; --unsure-bg: #fff4d6; --info: #334e68; --info-bg: #eef2f7; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
main { max-width: 1260px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 26px; margin: 0 0 4px; word-break: break-all; }
h1 .label { color: var(--muted); font-weight: 500; }
h2 { font-size: 19px; margin: 30px 0 12px; }
h3 { font-size: 12.5px; margin: 0; color: var(--muted); font-weight: 650; text-transform: uppercase;
  letter-spacing: .04em; }
code { font: 13px/1.3 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #eef1f5;
  padding: 1px 4px; border-radius: 4px; word-break: break-all; }
.meta { color: var(--muted); margin: 4px 0 0; }
.overall { display: flex; align-items: baseline; gap: 16px; margin: 18px 0 6px; padding: 14px 20px;
  border-radius: 10px; border: 1px solid; }
.overall .word { font-size: 28px; font-weight: 800; letter-spacing: .04em; }
.overall .detail { font-size: 16px; }
.overall.pass { background: var(--pass-bg); color: var(--pass); }
.overall.fail { background: var(--fail-bg); color: var(--fail); }
.overall.inconclusive { background: var(--unsure-bg); color: var(--unsure); }
.overall.info { background: var(--info-bg); color: var(--info); }
.partial { background: var(--unsure-bg); color: var(--unsure); padding: 10px 16px; border-radius: 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(228px, 1fr)); gap: 14px;
  margin-top: 14px; }
.card { background: #fff; border: 1px solid var(--line); border-top: 5px solid var(--info);
  border-radius: 10px; padding: 12px 16px; }
.card.pass { border-top-color: var(--pass); } .card.fail { border-top-color: var(--fail); }
.card.inconclusive { border-top-color: #d99a00; }
.card .row { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
.card .big { font-size: 30px; font-weight: 700; margin: 4px 0 4px; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
.card .big small { font-size: 17px; font-weight: 600; color: var(--muted); }
.cards.info .big { font-size: 24px; }
.card.fail .big { color: var(--fail); }
.card p { margin: 2px 0; color: var(--muted); font-size: 13px; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: 12px; font-weight: 700;
  text-transform: uppercase; letter-spacing: .04em; }
.badge.pass { background: var(--pass-bg); color: var(--pass); }
.badge.fail { background: var(--fail-bg); color: var(--fail); }
.badge.inconclusive { background: var(--unsure-bg); color: var(--unsure); }
.badge.info { background: var(--info-bg); color: var(--info); }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 16px; }
figure.chart { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 10px;
  padding: 10px 10px 8px; }
figure.chart svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; padding: 4px 6px 0; }
.scroll { overflow-x: auto; }
table code { white-space: nowrap; word-break: normal; }
table { border-collapse: collapse; background: #fff; border: 1px solid var(--line); border-radius: 10px;
  font-size: 13.5px; width: 100%; }
th, td { padding: 6px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: #f0f3f7; font-size: 12.5px; color: var(--muted); vertical-align: bottom; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.warn { color: var(--unsure); font-weight: 700; } td.bad { color: var(--fail); font-weight: 700; }
.hint { color: var(--muted); font-size: 13px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 6px 18px; background: #fff;
  border: 1px solid var(--line); border-radius: 10px; padding: 14px 18px; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; }
.notes li, .why li { margin: 4px 0; }
.card .cause { color: var(--ink); } .evidence { color: var(--muted); }
footer { color: var(--muted); font-size: 12.5px; margin-top: 34px; }
@media print { body { background: #fff; } .charts { grid-template-columns: 1fr; } }
"""


def render_html(
    summary: Mapping[str, Any],
    timeseries: Mapping[str, Any] | None = None,
    *,
    steps: Sequence[Mapping[str, Any]] | None = None,
    knee: int | None = None,
) -> str:
    """The report page (pure). `timeseries` is `ledger_timeseries(...)`'s dict (None: no over-time
    charts). `steps` are capacity steps as loadgen.capacity writes them to steps.json (`label`,
    `target_rps` or `users`, `achieved_rps`, `p50_ms`/`p99_ms`, `collection` and `errors` as
    `{k, n, rate, ci95}`, `breaches`, `knee: true` on the knee step) and `knee` is the index of
    the knee step; both are read from `summary["capacity"]` (`{"steps": [...], "knee": index}`)
    when `steps` is not given."""
    ts: Mapping[str, Any] = timeseries or {}
    run_id = summary.get("run_id", "?")
    target = _dict(summary.get("target"))
    status = str(summary.get("status", "complete"))
    if steps is None:
        steps, knee = _steps_of(summary.get("capacity"))
    meta = (
        f"{esc(target.get('kind', '?'))} target · gateway <code>{esc(target.get('gateway', '?'))}</code> "
        f"(Host <code>{esc(target.get('host', '?'))}</code>) · backend <code>{esc(target.get('backend', '?'))}</code>"
        f"<br/>started {esc(_utc(summary.get('started_at')))} · "
        + (
            "complete run"
            if status == "complete"
            else f'<span class="badge inconclusive">{esc(status)}</span>'
        )
    )
    if summary.get("verified_at") is not None:
        meta += f" · verified {esc(_utc(summary.get('verified_at')))}"
    body = [
        f'<header><h1><span class="label">loadgen run</span> <span id="run-id">{esc(run_id)}</span></h1>'
        f'<p class="meta">{meta}</p></header>',
        _overall(summary),
        _cards(summary, ts),
    ]
    if steps:
        body.append(_capacity_charts(steps, knee))
    body.append(_charts(summary, ts))
    body.append(_modes_table(summary))
    body.append(_header_modes_table(summary))
    body.append(_why(summary))
    body.append(_profile(summary))
    body.append(_numbers_table(summary))
    body.append(_details(summary))
    body.append(
        f"<footer>Generated by loadgen {esc(__version__)} from summary.json (schema "
        f"{esc(summary.get('schema_version', '?'))}) and the run's ledger. Self-contained: no scripts, "
        "no network; the numbers are also in summary.json, modes.csv and timeseries.csv.</footer>"
    )
    title = f"loadgen run {plots.visible_text(run_id)}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en" xmlns="http://www.w3.org/1999/xhtml"><head><meta charset="utf-8"/>'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'\"/>"
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        '<meta name="color-scheme" content="light"/>'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f'<body class="{_verdict_class(_overall_word(summary))}"><main>'
        + "".join(body)
        + "</main></body></html>\n"
    )


def _overall_word(summary: Mapping[str, Any]) -> str:
    values = {str(v) for v in _dict(summary.get("verdicts")).values()}
    if "fail" in values:
        return "fail"
    if "inconclusive" in values:
        return "inconclusive"
    return "pass" if values else "info"


# --- a run folder ---------------------------------------------------------------------------------


def _steps_of(doc: object) -> tuple[list[Mapping[str, Any]], int | None]:
    """(steps, knee index) from `{"steps": [...], "knee": index|None}` (steps.json's shape)."""
    d = _dict(doc)
    k = _num(d.get("knee"))
    return [s for s in _list(d.get("steps")) if isinstance(s, Mapping)], (int(k) if k is not None else None)


def _load_steps(run_dir: Path) -> tuple[list[Mapping[str, Any]] | None, int | None]:
    path = run_dir / "steps.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    return _steps_of(data)


def render_run_folder(run_dir: Path, *, window_s: float = 1.0) -> list[Path]:
    """Write report.html, modes.csv and timeseries.csv into a run folder (from its summary.json,
    ledger.jsonl and fetched.jsonl; capacity steps from summary["capacity"] or steps.json).
    Returns the written paths. Raises OSError/ValueError when summary.json is unreadable."""
    summary = json.loads((run_dir / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise ValueError(f"{run_dir / 'summary.json'} is not a JSON object")
    summary = redact_data(summary)  # report.html is shared: no credential from any URL it quotes
    fetched = run_dir / "fetched.jsonl"
    observations = load_fetched(fetched) if fetched.exists() else None
    timeseries = ledger_timeseries(
        read_ledger(run_dir / "ledger.jsonl"),
        window_s,
        observations=observations,
        expect=expectation_from_summary(summary) if observations is not None else None,
    )
    steps, knee = _load_steps(run_dir)
    written: list[Path] = []
    for name, text in (
        ("report.html", render_html(summary, timeseries, steps=steps, knee=knee)),
        ("modes.csv", modes_csv(summary)),
        ("timeseries.csv", timeseries_csv(timeseries)),
    ):
        path = run_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
