"""The report's tables and lists: per header mode, header modes against the profile, the mesh
profile's facts, why each verdict did not pass, every headline number, and the completeness
details and notes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.report.html.common import (
    VERDICT_TITLES,
    as_dict,
    as_int,
    as_list,
    badge,
    ci_text,
    esc,
    ms_text,
    pct_text,
    proportion,
    seconds_text,
)
from loadgen.report.profile_view import PROFILE_TITLE, profile_facts_rows, profile_source_line
from loadgen.report.render import HEADER_MODE_COLUMNS, header_mode_rows, headline_rows, verdict_causes

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
    ("not_queried", "not queried"),
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


def modes_table(summary: Mapping[str, Any]) -> str:
    modes = as_dict(summary.get("modes"))
    latency = as_dict(summary.get("latency_ms"))
    head = "".join(f'<th class="num">{esc(label)}</th>' for _, label in _MODE_COLS)
    rows = []
    for mode, m in modes.items():
        m = as_dict(m)
        lat = as_dict(latency.get(mode))
        cells = []
        for key, _ in _MODE_COLS:
            v = as_int(m.get(key))
            cls = "num " + _BAD_IF_NONZERO[key] if v and key in _BAD_IF_NONZERO else "num"
            cells.append(f'<td class="{cls}">{v:,}</td>')
        cells += [f'<td class="num">{esc(ms_text(lat.get(q)))}</td>' for q in ("p50", "p95", "p99")]
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


def header_modes_table(summary: Mapping[str, Any]) -> str:
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
            f'<td class="num{" bad" if i >= 2 and c else ""}">{as_int(c):,}</td>'
            for i, c in enumerate(counts)
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


def profile_section(summary: Mapping[str, Any]) -> str:
    """What the probe learned about the mesh: the facts that set the expectations."""
    profile = as_dict(summary.get("profile"))
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


def why_section(summary: Mapping[str, Any]) -> str:
    """Every verdict that did not pass, with its evidence and most likely cause."""
    try:
        causes = verdict_causes(dict(summary))
    except (KeyError, TypeError, ValueError):
        return ""
    if not causes:
        return ""
    items = "".join(
        f"<li>{badge(verdict)} <strong>{esc(VERDICT_TITLES.get(name, name))}</strong> "
        f'<span class="evidence">({esc(evidence)})</span>: {esc(cause)}</li>'
        for name, verdict, evidence, cause in causes
    )
    return f'<section id="why"><h2>Why</h2><ul class="why">{items}</ul></section>'


def numbers_table(summary: Mapping[str, Any]) -> str:
    try:
        rows = headline_rows(dict(summary))
    except (KeyError, TypeError, ValueError, IndexError):
        return ""
    body = "".join(
        f"<tr><th>{esc(name)}</th><td>{esc(value)}</td><td>{badge(verdict) if verdict else ''}</td></tr>"
        for name, value, verdict in rows
    )
    return (
        '<section id="numbers"><h2>All numbers</h2><div class="scroll"><table class="numbers">'
        "<thead><tr><th>measure</th><th>value (rate [95 % CI] (k, n))</th><th>verdict</th></tr></thead>"
        f"<tbody>{body}</tbody></table></div></section>"
    )


def _codes(values: object) -> str:
    return ", ".join(f"<code>{esc(v)}</code>" for v in as_list(values)) or "none"


def details_section(summary: Mapping[str, Any]) -> str:
    mesh = as_dict(summary.get("mesh"))
    parts = ['<section id="details"><h2>Completeness and details</h2><dl>']
    services = ", ".join(f"<code>{esc(s)}</code>" for s in as_list(mesh.get("expected_services"))) or "?"
    parts.append(
        f"<dt>complete trace</dt><dd>{as_int(mesh.get('expected_spans_per_trace'))} spans from {services}</dd>"
    )
    hist = as_dict(mesh.get("spans_per_found_trace"))
    hist_text = ", ".join(f"{esc(k)} spans: {as_int(v):,}" for k, v in hist.items()) or "none"
    parts.append(f"<dt>spans per found trace</dt><dd>{hist_text}</dd>")
    tag = as_dict(mesh.get("run_tag"))
    parts.append(
        f"<dt>spans tagged with this run id</dt><dd>{as_int(tag.get('k')):,} of {as_int(tag.get('n')):,}</dd>"
    )
    parts.append(f"<dt>missing trace ids (examples)</dt><dd>{_codes(mesh.get('missing_examples'))}</dd>")
    parts.append(f"<dt>leaked trace ids (examples)</dt><dd>{_codes(mesh.get('leaked_examples'))}</dd>")
    pred = as_dict(as_dict(summary.get("sampling")).get("prediction"))
    if as_list(pred.get("examples")):
        parts.append(f"<dt>rule mismatches (request ids)</dt><dd>{_codes(pred.get('examples'))}</dd>")
    ref = as_dict(summary.get("reference"))
    if as_list(ref.get("missing_examples")):
        parts.append(f"<dt>missing reference traces</dt><dd>{_codes(ref.get('missing_examples'))}</dd>")
    tags = summary.get("tag_search")
    if isinstance(tags, Mapping):
        dec = as_dict(tags.get("decision"))
        estimate = (
            f"decision estimate {esc(pct_text(proportion(dec)[0]))} ({esc(ci_text(dec))})"
            if dec
            else f"no decision estimate ({esc(tags.get('note') or 'nothing could be attributed')})"
        )
        parts.append(
            "<dt>run-tag search</dt><dd>"
            f"{as_int(tags.get('tagged_traces')):,} traces tagged ({as_int(tags.get('tagged_mesh')):,} mesh, "
            f"{as_int(tags.get('tagged_reference')):,} reference); {estimate}</dd>"
        )
    readback = as_dict(summary.get("readback"))
    if readback:
        polls = [as_dict(p) for p in as_list(readback.get("polls"))]
        failed = [
            p
            for p in polls
            if as_int(p.get("queried")) and as_int(p.get("errors")) >= as_int(p.get("queried"))
        ]
        if readback.get("stable") is True:
            state = "stable"
        elif polls and len(failed) == len(polls):
            state = "<strong>every poll of the backend failed</strong>: traces are unknown"
        elif polls and as_int(polls[-1].get("errors")):
            state = f"<strong>{as_int(polls[-1].get('errors')):,} query errors on the last poll</strong>"
        else:
            state = "<strong>still changing</strong>"
        parts.append(
            f"<dt>read-back</dt><dd>{len(polls)} polls, quiet period "
            f"{esc(seconds_text(readback.get('quiet_s')))}, {state}</dd>"
        )
    parts.append("</dl></section>")
    notes = as_list(summary.get("notes"))
    if notes:
        parts.append(
            '<section id="notes"><h2>Notes</h2><ul class="notes">'
            + "".join(f"<li>{esc(n)}</li>" for n in notes)
            + "</ul></section>"
        )
    return "".join(parts)
