"""`loadgen watch`'s status page at `/` (pure): the latest WatchSnapshot as one self-contained HTML
document in the style of the run report (its style sheet, cards and escaping).

Per window: the decision rate with its interval against the configured sampling, and the
collection ratio of each source with its interval and outcome counts. Then what is true now:
pending checks, time to queryable (p50/p99 estimated from the histogram), the age of the last
successful read-back and watch's own errors; the totals since the state folder was created,
the reference accounting, the mesh profile and the notes.

A figure with no data reads "no data" (never 0 %), and before the first snapshot the page says
that nothing is known yet. Every value is escaped; the page has no script (a meta refresh
reloads it every few seconds) and loads nothing, as the report (Content-Security-Policy
`default-src 'none'`). The markup is well-formed XML, so tests parse it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from loadgen import __version__
from loadgen.report import plots
from loadgen.report.html.common import ci_short, esc, k_of_n, pct_text, utc_text
from loadgen.report.html.page import CSS
from loadgen.watch.model import (
    ERROR_COMPONENTS,
    REFERENCE_STATES,
    TTQ_BUCKETS_S,
    Interval,
    Source,
    WatchSnapshot,
    WindowStats,
)
from loadgen.watch.windows import OUTCOMES, histogram_quantile

#: What the page adds to the report's style sheet: a narrow screen keeps every figure in view.
WATCH_CSS = """
.windows h2 small { color: var(--muted); font-weight: 500; font-size: 14px; }
.card .big.nodata { color: var(--muted); font-size: 22px; }
.card .row { flex-wrap: wrap; }
dl { grid-template-columns: minmax(90px, max-content) minmax(0, 1fr); }
dd { overflow-wrap: anywhere; }
@media (max-width: 600px) {
  main { padding: 14px 12px 28px; }
  h1 { font-size: 21px; }
  .cards { grid-template-columns: minmax(0, 1fr); }
  .overall { flex-wrap: wrap; gap: 6px 12px; }
  .overall .word { font-size: 22px; }
}
"""

NO_DATA = "no data"
TTQ_TITLE = "Time to queryable (mesh p50)"


def _as_proportion(iv: Interval) -> dict[str, object]:
    """An Interval in the report's `{k, n, rate, ci95}` shape, for its ci/k-of-n helpers."""
    return {"k": iv.k, "n": iv.n, "rate": iv.ratio, "ci95": [iv.lower, iv.upper]}


def duration_text(seconds: float | None) -> str:
    """4 s, 3 min 5 s, 2 h 4 min, 3 d 2 h; "unknown" for None or not finite."""
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min" if s % 3600 // 60 else f"{s // 3600} h"
    return f"{s // 86400} d {s % 86400 // 3600} h" if s % 86400 // 3600 else f"{s // 86400} d"


def quantile_text(seconds: float | None, last_bound: float) -> str:
    if seconds is None:
        return NO_DATA
    if math.isinf(seconds):
        return f"> {last_bound:g} s"
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def figure_card(
    card_id: str, title: str, big: str, lines: Iterable[str], cls: str = "info", flag: str = ""
) -> str:
    """A card as the report draws them (title, the number large with its unit after the first
    space smaller, already escaped lines), coloured by `cls` (pass/fail/inconclusive/info), with
    an optional `flag` badge that states a fact rather than a verdict."""
    value, _, unit = big.partition(" ")
    unit_html = f" <small>{esc(unit)}</small>" if unit else ""
    flag_html = f'<span class="badge {esc(cls)}">{esc(flag)}</span>' if flag else ""
    body = "".join(f"<p>{line}</p>" for line in lines)
    return (
        f'<article class="card {esc(cls)}" id="card-{esc(card_id)}"><h3>{esc(title)}</h3>'
        f'<div class="row"><div class="big">{esc(value)}{unit_html}</div>{flag_html}</div>{body}</article>'
    )


def _no_data_card(card_id: str, title: str, why: str, lines: Iterable[str] = ()) -> str:
    """A card whose figure is unknown: "no data" where the number goes, then why (and any other
    already escaped lines)."""
    body = "".join(f"<p>{line}</p>" for line in (esc(why), *lines))
    return (
        f'<article class="card info" id="card-{esc(card_id)}"><h3>{esc(title)}</h3>'
        f'<div class="row"><div class="big nodata">{NO_DATA}</div></div>{body}</article>'
    )


def _decision_card(window: WindowStats, configured: float | None) -> str:
    iv = window.decision
    card_id = f"decision-{window.label}"
    title = "Sampling decision rate"
    if iv.ratio is None:
        return _no_data_card(
            card_id, title, f"no mesh request with a known decision in the last {window.label}"
        )
    lines = [esc(ci_short(_as_proportion(iv))), k_of_n(_as_proportion(iv), "decided requests sampled")]
    if configured is None:
        lines.append("configured <em>unknown</em>")
        return figure_card(card_id, title, pct_text(iv.ratio), lines)
    inside = iv.lower is not None and iv.upper is not None and iv.lower <= configured <= iv.upper
    where = "inside" if inside else "outside"
    lines.append(f"configured {esc(pct_text(configured))}: {where} the interval")
    cls, flag = ("pass", "covers") if inside else ("fail", "misses")
    return figure_card(card_id, title, pct_text(iv.ratio), lines, cls, flag)


def _outcome_line(outcomes: Mapping[str, int]) -> str:
    parts = [f"{esc(o.replace('_', ' '))} {int(outcomes.get(o, 0)):,}" for o in OUTCOMES]
    extra = sorted(set(outcomes) - set(OUTCOMES))
    parts += [f"{esc(o)} {int(outcomes[o]):,}" for o in extra]
    return " · ".join(parts)


def _collection_card(window: WindowStats, source: Source) -> str:
    title = f"{'Mesh' if source == Source.MESH else 'Reference'} collection"
    card_id = f"collection-{source}-{window.label}"
    entry = window.collection.get(source)
    if entry is None or entry.collection.ratio is None:
        why = f"no {source} trace found, partial or missing in the last {window.label}"
        return _no_data_card(card_id, title, why, [_outcome_line(entry.outcomes)] if entry else [])
    p = _as_proportion(entry.collection)
    lines = [esc(ci_short(p)), k_of_n(p, "found complete"), _outcome_line(entry.outcomes)]
    return figure_card(card_id, title, pct_text(entry.collection.ratio), lines)


def windows_section(snapshot: WatchSnapshot) -> str:
    parts = []
    for window in snapshot.windows:
        cards = [_decision_card(window, snapshot.configured_ratio)]
        cards += [_collection_card(window, source) for source in Source]
        parts.append(
            f'<section class="windows" id="window-{esc(window.label)}">'
            f"<h2>Last {esc(duration_text(window.window_s))} <small>window={esc(window.label)}</small></h2>"
            f'<div class="cards">{"".join(cards)}</div></section>'
        )
    return "".join(parts)


def _ttq_card(snapshot: WatchSnapshot, last_bound: float) -> str:
    lines = []
    p50_mesh: float | None = None
    for source in Source:
        hist = snapshot.ttq.get(source)
        if hist is None or hist.count == 0:
            lines.append(f"{esc(source)}: {NO_DATA}")
            continue
        p50, p99 = histogram_quantile(hist, 0.5), histogram_quantile(hist, 0.99)
        if source == Source.MESH:
            p50_mesh = p50
        lines.append(
            f"{esc(source)}: p50 {esc(quantile_text(p50, last_bound))} · "
            f"p99 {esc(quantile_text(p99, last_bound))} · {hist.count:,} traces"
        )
    if p50_mesh is None:
        return _no_data_card("ttq", TTQ_TITLE, "no mesh trace found complete yet", lines)
    return figure_card("ttq", TTQ_TITLE, quantile_text(p50_mesh, last_bound), lines)


def _readback_card(snapshot: WatchSnapshot) -> str:
    last = snapshot.last_readback_success
    if last is None:
        return _no_data_card("readback", "Last successful read-back", "the backend has not answered yet")
    age = snapshot.now - last
    return figure_card(
        "readback", "Last successful read-back", f"{duration_text(age)} ago", [esc(utc_text(last))]
    )


def _errors_card(snapshot: WatchSnapshot) -> str:
    total = sum(snapshot.errors.values())
    named = [c for c in ERROR_COMPONENTS if snapshot.errors.get(c)]
    named += sorted(c for c in snapshot.errors if c not in ERROR_COMPONENTS and snapshot.errors[c])
    lines = [" · ".join(f"{esc(c)} {snapshot.errors[c]:,}" for c in named)] if named else ["none so far"]
    return figure_card("errors", "Watch's own errors", f"{total:,}", lines, "fail" if total else "info")


def now_section(snapshot: WatchSnapshot, last_bound: float) -> str:
    pending = " · ".join(f"{esc(s)} {snapshot.pending.get(s, 0):,}" for s in Source)
    cards = [
        figure_card(
            "pending",
            "Pending checks",
            f"{sum(snapshot.pending.values()):,}",
            [pending, "waiting for their deadline or retrying"],
        ),
        _ttq_card(snapshot, last_bound),
        _readback_card(snapshot),
        _errors_card(snapshot),
    ]
    return f'<section id="now"><h2>Now</h2><div class="cards info">{"".join(cards)}</div></section>'


def _table(section_id: str, title: str, head: Iterable[str], rows: list[list[str]], empty: str) -> str:
    """A table of already escaped cells; the first column is a row header, the rest numbers."""
    if not rows:
        return f'<section id="{section_id}"><h2>{esc(title)}</h2><p class="hint">{esc(empty)}</p></section>'
    heads = list(head)
    thead = f"<th>{esc(heads[0])}</th>" + "".join(f'<th class="num">{esc(h)}</th>' for h in heads[1:])
    body = "".join(
        f"<tr><th>{row[0]}</th>" + "".join(f'<td class="num">{c}</td>' for c in row[1:]) + "</tr>"
        for row in rows
    )
    return (
        f'<section id="{section_id}"><h2>{esc(title)}</h2><div class="scroll"><table>'
        f"<thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table></div></section>"
    )


def totals_section(snapshot: WatchSnapshot) -> str:
    """Checks concluded since the state folder was created, by source and mode, and requests sent
    by mode and status."""
    keys = sorted({(str(s), m) for s, m, _ in snapshot.traces})
    trace_rows = [
        [f"<code>{esc(s)}</code> <code>{esc(m)}</code>"]
        + [f"{snapshot.traces.get((Source(s), m, o), 0):,}" for o in OUTCOMES]
        for s, m in keys
    ]
    statuses = sorted({st for _, st in snapshot.requests}, key=lambda x: (len(x), x))
    modes = sorted({m for m, _ in snapshot.requests})
    request_rows = [
        [f"<code>{esc(m)}</code>"] + [f"{snapshot.requests.get((m, st), 0):,}" for st in statuses]
        for m in modes
    ]
    since = f"since {utc_text(snapshot.started_at)}"
    return _table(
        "traces",
        f"Checks concluded {since}",
        ["source · mode", *(o.replace("_", " ") for o in OUTCOMES)],
        trace_rows,
        "no check has concluded yet",
    ) + _table(
        "requests",
        f"Requests sent {since}",
        ["mode", *(f"status {st}" if st != "0" else "no response" for st in statuses)],
        request_rows,
        "no request sent yet",
    )


def _definition_list(section_id: str, title: str, items: list[tuple[str, str]], empty: str) -> str:
    if not items:
        return f'<section id="{section_id}"><h2>{esc(title)}</h2><p class="hint">{esc(empty)}</p></section>'
    body = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    return f'<section id="{section_id}"><h2>{esc(title)}</h2><dl>{body}</dl></section>'


def details_section(snapshot: WatchSnapshot) -> str:
    """Reference accounting, the mesh profile and the notes."""
    states = list(REFERENCE_STATES) + sorted(set(snapshot.reference) - set(REFERENCE_STATES))
    reference = [(s, f"{snapshot.reference.get(s, 0):,}") for s in states] if snapshot.reference else []
    profile = [(k.replace("_", " "), v) for k, v in snapshot.profile.items()]
    notes = "".join(f"<li>{esc(n)}</li>" for n in snapshot.notes)
    return (
        _definition_list(
            "reference", "Reference traces (side-emitter)", reference, "no reference trace started yet"
        )
        + _definition_list("profile", "Mesh profile", profile, "the mesh has not been probed yet")
        + (f'<section id="notes"><h2>Notes</h2><ul class="notes">{notes}</ul></section>' if notes else "")
    )


def _header(snapshot: WatchSnapshot | None, refresh_s: int) -> str:
    if snapshot is None:
        run_id, meta = "starting", "no snapshot yet"
    else:
        run_id = snapshot.run_id
        meta = (
            f"watching since {esc(utc_text(snapshot.started_at))} "
            f"({esc(duration_text(snapshot.now - snapshot.started_at))}) · "
            f"figures of {esc(utc_text(snapshot.now))}"
        )
    return (
        f'<header><h1><span class="label">loadgen watch</span> <span id="run-id">{esc(run_id)}</span></h1>'
        f'<p class="meta">{meta} · this page reloads every {refresh_s} s</p></header>'
    )


def has_window_data(snapshot: WatchSnapshot) -> bool:
    """Whether any window has a figure (a decision rate or a collection ratio)."""
    return any(
        w.decision.n > 0 or any(c.collection.n > 0 for c in w.collection.values()) for w in snapshot.windows
    )


def _overall(snapshot: WatchSnapshot | None) -> str:
    if snapshot is None:
        word, detail = "NO DATA YET", "watch has not published its first figures; nothing is known yet"
    else:
        sent = sum(snapshot.requests.values())
        concluded = sum(snapshot.traces.values())
        word = "WATCHING" if has_window_data(snapshot) else "NO DATA YET"
        detail = f"{sent:,} requests sent · {concluded:,} checks concluded · " + (
            "configured sampling " + pct_text(snapshot.configured_ratio)
            if snapshot.configured_ratio is not None
            else "configured sampling unknown"
        )
    return (
        f'<section class="overall info" id="overall"><span class="word">{esc(word)}</span>'
        f'<span class="detail">{esc(detail)}</span></section>'
    )


def render_page(snapshot: WatchSnapshot | None, *, refresh_s: int = 5) -> str:
    """The status page of the latest snapshot (None: before the first one); it reloads itself
    every `refresh_s` seconds."""
    body = [_header(snapshot, refresh_s), _overall(snapshot)]
    if snapshot is not None:
        body += [
            windows_section(snapshot),
            now_section(snapshot, TTQ_BUCKETS_S[-1]),
            totals_section(snapshot),
            details_section(snapshot),
        ]
    body.append(
        f"<footer>loadgen {esc(snapshot.version if snapshot is not None else __version__)} · the same figures for Prometheus at "
        '<a href="metrics">/metrics</a> · health at <a href="healthz">/healthz</a></footer>'
    )
    title = f"loadgen watch {plots.visible_text(snapshot.run_id if snapshot is not None else 'starting')}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en" xmlns="http://www.w3.org/1999/xhtml"><head><meta charset="utf-8"/>'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'\"/>"
        f'<meta http-equiv="refresh" content="{int(refresh_s)}"/>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        '<meta name="color-scheme" content="light"/>'
        f"<title>{esc(title)}</title><style>{CSS}{WATCH_CSS}</style></head>"
        '<body class="info"><main>' + "".join(body) + "</main></body></html>\n"
    )
