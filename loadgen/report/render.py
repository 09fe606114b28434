"""Renderers from one summary (`loadgen.summary.Summary`, the content of summary.json) to text
(pure, no I/O). They also take summary data as a dict, decoded on the way in.

Span-derived text is untrusted input (tags come from the network): Markdown output escapes it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import msgspec
from rich.text import Text

from loadgen.redact import redact_data
from loadgen.report.fit import Cell, Col, FitTable
from loadgen.report.profile_view import profile_markdown
from loadgen.summary.io import as_summary
from loadgen.summary.model import (
    Latency,
    Mesh,
    Propagation,
    Proportion,
    ReadbackQueries,
    Sampling,
    Summary,
    Target,
)

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def md_escape(value: object) -> str:
    """Escape Markdown/HTML-significant characters and control characters in untrusted text."""
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in str(value))
    return _MD_SPECIAL.sub(r"\\\1", text).replace("&", "&amp;")


def md_code(value: object) -> str:
    """Untrusted text as a Markdown code span: shown verbatim (Markdown does not process escapes
    or HTML inside code spans), so only backticks and control characters need neutralising.
    Text with HTML/table characters is escaped instead: some renderers mishandle them even there."""
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in str(value))
    if any(c in text for c in "<>&|"):
        return md_escape(value)
    return "`" + text.replace("`", "'") + "`"


def fmt_pct(fraction: float) -> str:
    """A fraction as a person reads it: `0.2013` -> `20.13%` (summary.json keeps fractions)."""
    return f"{fraction * 100:.2f}%"


def fmt_rate(p: Proportion | Mapping[str, Any] | None) -> str:
    """`20.13% [19.85%, 20.41%] (k=2013, n=10000)`; `n/a (n=0)` when nothing was measured."""
    if p is not None and not isinstance(p, Proportion):
        p = msgspec.convert(dict(p), Proportion)
    if p is None or not p.n:
        return "n/a (n=0)"
    low, high = p.ci95
    rate = p.rate if p.rate is not None else p.k / p.n
    return f"{fmt_pct(rate)} [{fmt_pct(low)}, {fmt_pct(high)}] (k={p.k}, n={p.n})"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_json(summary: Summary | Mapping[str, Any]) -> str:
    data = summary.to_dict() if isinstance(summary, Summary) else summary
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def error_share_text(summary: Summary) -> str:
    """`3.00% (k=3 failed, n=100) vs maximum 5%`: the load_delivered evidence in one line."""
    requests = summary.requests
    total, errors = (requests.total, requests.errors) if requests else (0, 0)
    limit = summary.max_error_rate
    most = f" vs maximum {limit * 100:g}%" if limit is not None else ""
    if not total:
        return "no request was made"
    return f"{fmt_pct(errors / total)} (k={errors} failed, n={total}){most}"


def _sections(s: Summary) -> tuple[Sampling, Mesh, Propagation]:
    """The sections every report shows (a summary without them is not a run's: KeyError)."""
    if s.sampling is None or s.mesh is None or s.propagation is None:
        missing = [n for n in ("sampling", "mesh", "propagation") if getattr(s, n) is None]
        raise KeyError(missing[0])
    return s.sampling, s.mesh, s.propagation


def queries_text(q: ReadbackQueries) -> str:
    """`1,000 requests at 312/s; concurrency 4-12 (adaptive, up to 32); 3 throttled`."""
    span = f"{q.lowest_concurrency}" + (
        f"-{q.highest_concurrency}" if q.highest_concurrency != q.lowest_concurrency else ""
    )
    how = f"adaptive, up to {q.max_concurrency}" if q.adaptive else "fixed"
    text = f"{q.requests:,} requests at {q.qps or 0:,.0f}/s; concurrency {span} ({how})"
    failed = [
        (q.throttled, "throttled"),
        (q.server_errors, "server errors"),
        (q.transport_errors, "unanswered"),
    ]
    return text + "".join(f"; {n:,} {what}" for n, what in failed if n)


def headline_rows(summary: Summary | Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, verdict) rows: the headline of every report."""
    summary = as_summary(summary)
    sampling, mesh, prop = _sections(summary)
    verdicts = summary.verdicts
    conf = sampling.configured_percent
    rows = []
    if "load_delivered" in verdicts:
        rows.append(("error share (load delivered)", error_share_text(summary), verdicts["load_delivered"]))
    rows.append(
        (
            "decision rate (no-flag requests)",
            fmt_rate(sampling.decision) + (f" vs configured {conf:g}%" if conf is not None else ""),
            verdicts.get("sampling", ""),
        )
    )
    pred = sampling.prediction
    if pred is not None and pred.checked:
        rows.append(
            (
                "x-request-id rule prediction",
                f"{pred.mismatches} mismatches of {pred.checked} requests",
                verdicts.get("sampling_prediction", ""),
            )
        )
    collection = fmt_rate(mesh.collection)
    if mesh.not_queried:  # a sampled read-back: the rate is the queried sample's
        collection += f" (a sample: {mesh.not_queried} sampled requests not queried)"
    rows.append(("mesh collection rate", collection, verdicts.get("mesh_collection", "")))
    rows.append(partial_row(mesh))
    leaks = f"{mesh.leaked} / {mesh.unknown}"
    if mesh.leak_checked is not None:
        leaks += f" ({mesh.leaked} leaked of {mesh.leak_checked} queried)"
    rows.append(("mesh leaked / unknown", leaks, verdicts.get("no_leaks", "")))
    queries = summary.readback.queries if summary.readback is not None else None
    if queries is not None and queries.qps is not None:
        rows.append(("backend queries", queries_text(queries), ""))
    ref = summary.reference
    if ref is not None and ref.started:
        rows.append(
            (
                "reference collection rate",
                fmt_rate(ref.collection)
                + f"; started {ref.started}, exported {ref.exported}, failed {ref.failed}, dropped {ref.dropped}",
                verdicts.get("reference_collection", ""),
            )
        )
    if "header_modes" in verdicts:
        checked, violations = header_mode_totals(summary)
        rows.append(
            (
                "header modes vs the profile",
                f"{violations} violations in {checked} checked requests",
                verdicts.get("header_modes", ""),
            )
        )
    rows.append(
        (
            "injected trace ids kept",
            f"upstream {prop.k}/{prop.n}, backend {prop.backend.k}/{prop.backend.n}",
            "",
        )
    )
    return rows


FINDING = "finding"  # not a verdict: something to look at that no verdict judges on its own


def partial_row(mesh: Mesh) -> tuple[str, str, str]:
    """Partial traces (sampled, found, spans missing) are a finding, never a pass: the collection
    verdict counts them as not collected, and this row says how many there were."""
    sampled = mesh.collection.n
    if not mesh.partial:
        return ("mesh partial traces", f"none of {sampled} sampled traces", "")
    share = f" ({fmt_pct(mesh.partial / sampled)})" if sampled else ""
    return ("mesh partial traces", f"{mesh.partial} of {sampled} sampled traces{share} miss spans", FINDING)


VIOLATION_KINDS = ("decision", "trace_id", "request_id", "leak")


def header_mode_totals(summary: Summary | Mapping[str, Any]) -> tuple[int, int]:
    """(requests checked against the profile's expectations, requests that broke one)."""
    modes = as_summary(summary).modes.values()
    return (
        sum(m.expectation_checked or 0 for m in modes),
        sum(m.expectation_violations for m in modes),
    )


def header_mode_rows(summary: Summary | Mapping[str, Any]) -> list[list[object]]:
    """Per mode with something to check (a definite expectation, or violations): mode, expected
    decision, requests, checked, violations, then violations by kind (VIOLATION_KINDS). Empty
    when the run has no header-modes verdict and no violation (nothing worth a table)."""
    summary = as_summary(summary)
    modes = summary.modes
    shown = "header_modes" in summary.verdicts or any(m.expectation_violations for m in modes.values())
    if not shown:
        return []
    rows: list[list[object]] = []
    for mode, m in modes.items():
        if not (m.expectation_definite or m.expectation_violations):
            continue
        kinds = m.violations or {}
        rows.append(
            [
                mode,
                m.expected_decision or "?",
                m.requests,
                m.expectation_checked or 0,
                m.expectation_violations,
                *(kinds.get(k, 0) for k in VIOLATION_KINDS),
            ]
        )
    return rows


HEADER_MODE_COLUMNS = ("mode", "expected decision", "requests", "checked", "violations", *VIOLATION_KINDS)


def verdict_causes(summary: Summary | Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(verdict name, verdict, evidence, cause) for every verdict that did not pass and says why
    (`verdict_details`); evidence is "checked N (minimum M)"."""
    summary = as_summary(summary)
    return [
        (name, d.verdict, f"checked {d.checked} (minimum {d.minimum}), {d.basis}", d.cause)
        for name, d in summary.verdict_details.items()
        if d.cause
    ]


MODES_CAPTION = (
    "req/err: requests/errors; part/miss/leak/unkn: partial/missing/leaked/unknown; p50-p99: latency ms"
)
COLOURS = {"pass": "green", "fail": "bold red", "inconclusive": "yellow", FINDING: "yellow"}

# Column priorities when the terminal is narrow: latency leaves first, then the rarer outcomes
# (both to a continuation table keyed by the mode), never the mode or its counts.
_MODE_COLS = [
    Col("mode", key=True, floor=12),
    *(Col(h, numeric=True) for h in ("req", "err", "sampled", "found")),
    *(Col(h, numeric=True, priority=1) for h in ("part", "miss", "leak", "unkn")),
    *(Col(h, numeric=True, priority=2) for h in ("p50", "p95", "p99")),
]


def _verdict_text(verdict: str) -> Text:
    return Text(verdict, style=COLOURS.get(verdict, ""))


def _modes_table(summary: Summary) -> FitTable:
    rows: list[list[Cell]] = []
    for mode, m in summary.modes.items():
        lat = summary.latency_ms.get(mode) or Latency()
        counts = (m.requests, m.errors, m.decided_sampled, m.found, m.partial, m.missing, m.leaked, m.unknown)
        rows.append([mode, *(str(v) for v in counts), fmt_ms(lat.p50), fmt_ms(lat.p95), fmt_ms(lat.p99)])
    title = "per header mode (sampled = upstream saw the sampled flag)"
    return FitTable(_MODE_COLS, rows, title=title, caption=MODES_CAPTION)


def render_terminal(summary: Summary | Mapping[str, Any]) -> list[FitTable]:
    """Tables that fit the console they are printed on (loadgen.report.fit): the headline numbers
    with verdicts, per header mode, then (when there is something to show) the header modes
    against the profile and why verdicts did not pass. Run ids, mode names and causes are shown
    as typed: nothing in them is read as rich markup."""
    s = as_summary(summary)
    title = f"loadgen run {s.run_id}" + (" (PARTIAL)" if s.status != "complete" else "")
    head_cols = [Col("measure", key=True, floor=14), Col("value (rate [95% CI] (k, n))"), Col("verdict")]
    head_rows: list[list[Cell]] = [[n, v, _verdict_text(d)] for n, v, d in headline_rows(s)]
    tables = [FitTable(head_cols, head_rows, title=title), _modes_table(s)]
    hm_rows = header_mode_rows(s)
    if hm_rows:
        hm_cols = [
            Col("mode", key=True, floor=12),
            Col("expected decision", floor=10),
            *(Col(h, numeric=True) for h in HEADER_MODE_COLUMNS[2:5]),
            *(Col(h, numeric=True, priority=1) for h in VIOLATION_KINDS),
        ]
        hm_title = "header modes vs the profile (requests that broke an expectation, by kind)"
        tables.append(FitTable(hm_cols, [[str(c) for c in row] for row in hm_rows], title=hm_title))
    causes = verdict_causes(s)
    if causes:
        why_cols = [Col("verdict", key=True), Col(""), Col("evidence"), Col("most likely cause")]
        why_rows: list[list[Cell]] = [[n, _verdict_text(v), e, c] for n, v, e, c in causes]
        tables.append(FitTable(why_cols, why_rows, title="why"))
    return tables


def _or(value: object, fallback: str = "?") -> object:
    return fallback if value is None else value


def _md_head(s: Summary) -> list[str]:
    lines = [f"# loadgen run {md_code(s.run_id)}", ""]
    if s.status != "complete":
        reason = s.status if isinstance(s.status_reason, msgspec.UnsetType) else s.status_reason
        lines.append(
            f"> **Partial run** ({md_escape(reason)}): numbers cover what was sent before the stop; unqueried traces are *unknown*, not missing."
        )
        lines.append("")
    target = s.target or Target()
    requests = s.requests
    if requests is None:
        raise KeyError("requests")
    lines.append(
        f"Target: {md_escape(_or(target.kind))} gateway {md_escape(_or(target.gateway))} "
        f"(Host {md_escape(_or(target.host))}), backend {md_escape(_or(target.backend))}. "
        f"Requests: {requests.total} ({requests.errors} errors)."
    )
    lines.append("")
    lines.append("| measure | value (rate [95% CI] (k, n)) | verdict |")
    lines.append("|---|---|---|")
    for name, value, verdict in headline_rows(s):
        lines.append(f"| {md_escape(name)} | {md_escape(value)} | {md_escape(verdict)} |")
    lines.append("")
    return lines


def _md_modes(s: Summary) -> list[str]:
    # A sampled read-back's traces outside the sample get their own column (only then).
    sampled_readback = any(m.not_queried for m in s.modes.values())
    header = ["mode", "expected decision", "requests", "errors", "sampled", "found", "partial", "missing"]
    header += [
        "leaked",
        "unknown",
        *(["not queried"] if sampled_readback else []),
        "p50 ms",
        "p95 ms",
        "p99 ms",
    ]
    lines = ["## Per header mode", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for mode, m in s.modes.items():
        lat = s.latency_ms.get(mode) or Latency()
        cells = [
            mode, m.expected_decision or "?", m.requests, m.errors, m.decided_sampled, m.found,
            m.partial, m.missing, m.leaked, m.unknown, *([m.not_queried] if sampled_readback else []),
            fmt_ms(lat.p50), fmt_ms(lat.p95), fmt_ms(lat.p99),
        ]  # fmt: skip
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    hm_rows = header_mode_rows(s)
    if hm_rows:
        lines += ["", "## Header modes vs the profile", ""]
        lines.append("| " + " | ".join(md_escape(c) for c in HEADER_MODE_COLUMNS) + " |")
        lines.append("|" + "---|" * len(HEADER_MODE_COLUMNS))
        lines.extend("| " + " | ".join(md_escape(c) for c in row) + " |" for row in hm_rows)
    causes = verdict_causes(s)
    if causes:
        lines += ["", "## Why", ""]
        lines.extend(
            f"- **{md_escape(name)}** {md_escape(verdict)} ({md_escape(evidence)}): {md_escape(cause)}"
            for name, verdict, evidence, cause in causes
        )
    lines.append("")
    return lines


def _md_completeness(s: Summary) -> list[str]:
    _sampling, mesh, _prop = _sections(s)
    lines = ["## Completeness", ""]
    lines.append(
        f"A complete sampled trace has {mesh.expected_spans_per_trace} spans from "
        f"{', '.join(md_escape(svc) for svc in mesh.expected_services)}. "
        f"Spans per found trace: {md_escape(json.dumps(mesh.spans_per_found_trace))}. "
        f"Spans carrying this run's id tag: {mesh.run_tag.k} of {mesh.run_tag.n}."
    )
    for label, examples in (("Missing", mesh.missing_examples), ("Leaked", mesh.leaked_examples)):
        if examples:
            lines.append("")
            lines.append(f"{label} trace ids (examples): " + ", ".join(md_code(t) for t in examples))
    integrity = s.integrity
    if integrity is not None and integrity.traces:
        kept, links = integrity.injected_kept_end_to_end, integrity.parent_links_ok
        lines += ["", "## Propagation integrity", ""]
        lines.append(
            f"{integrity.traces} traces judged; injected ids kept end to end: {kept.k} of "
            f"{kept.n}; parent links intact: {links.k} of {links.n}."
        )
        lines += ["", "| defect | count | examples | what it means |", "|---|---|---|---|"]
        for name, d in integrity.defects.items():
            count = "not searched" if d.count is None else d.count
            shown = ", ".join(md_code(t) for t in d.examples[:3])
            lines.append(f"| {md_escape(name)} | {md_escape(count)} | {shown} | {md_escape(d.explanation)} |")
    return lines


def render_markdown(summary: Summary | Mapping[str, Any]) -> str:
    data = summary.to_dict() if isinstance(summary, Summary) else summary
    s = as_summary(redact_data(data))  # report.md is shared: no credential from any URL it quotes
    lines = _md_head(s)
    if s.profile:
        lines.extend(profile_markdown(s.profile, md_escape))
    lines += _md_modes(s)
    lines += _md_completeness(s)
    if s.notes:
        lines += ["", "## Notes", ""]
        lines.extend(f"- {md_escape(n)}" for n in s.notes)
    lines.append("")
    return "\n".join(lines)


# The capacity steps table (loadgen.capacity.render.capacity_rows): what the knee is judged on
# stays; medians, the decision rate, reference spans and ingest leave first on a narrow terminal.
_CAPACITY_COLS = {
    "step": Col("step", numeric=True, key=True),
    "load": Col("load", key=True, floor=12),
    "req/s": Col("req/s", numeric=True),
    "p99 ms": Col("p99 ms", numeric=True),
    "errors": Col("errors", floor=12),
    "collection": Col("collection", floor=12),
    "bounds": Col("bounds", floor=12),
    "p95 ms": Col("p95 ms", numeric=True, priority=1),
    "decision": Col("decision", floor=12, priority=1),
    "p50 ms": Col("p50 ms", numeric=True, priority=2),
    "reference": Col("reference", floor=12, priority=2),
    "ingest spans/s": Col("ingest spans/s", numeric=True, priority=2),
}


def capacity_table(rows: list[list[str]], run_id: str) -> FitTable:
    """The steps (header row first) as a table that fits the terminal; the knee row in red.
    A column this renderer does not know yet is text that leaves early."""
    header, body = rows[0], rows[1:]
    cols = [_CAPACITY_COLS.get(str(h), Col(str(h), floor=12, priority=2)) for h in header]
    styles = ["bold red" if str(row[-1]).startswith("KNEE") else None for row in body]
    return FitTable(cols, body, title=f"capacity {run_id}", row_styles=styles)
