"""Renderers from one summary dict (the content of summary.json) to text (pure, no I/O).

Span-derived text is untrusted input (tags come from the network): Markdown output escapes it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from loadgen.redact import redact_data
from loadgen.report.profile_view import profile_markdown

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


def fmt_rate(p: dict[str, Any] | None) -> str:
    """`0.2013 [0.1985, 0.2041] (k=2013, n=10000)`; `n/a (n=0)` when nothing was measured."""
    if not p or not p.get("n"):
        return "n/a (n=0)"
    low, high = p["ci95"]
    return f"{p['rate']:.4f} [{low:.4f}, {high:.4f}] (k={p['k']}, n={p['n']})"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=False) + "\n"


def error_share_text(summary: dict[str, Any]) -> str:
    """`0.0300 (k=3 failed, n=100) vs maximum 0.05`: the load_delivered evidence in one line."""
    requests = summary.get("requests") or {}
    total, errors = _count(requests.get("total")), _count(requests.get("errors"))
    limit = summary.get("max_error_rate")
    most = f" vs maximum {limit:g}" if isinstance(limit, int | float) and not isinstance(limit, bool) else ""
    if not total:
        return "no request was made"
    return f"{errors / total:.4f} (k={errors} failed, n={total}){most}"


def _headline_rows(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    sampling = summary["sampling"]
    verdicts = summary.get("verdicts", {})
    conf = sampling.get("configured_percent")
    rows = []
    if "load_delivered" in verdicts:
        rows.append(("error share (load delivered)", error_share_text(summary), verdicts["load_delivered"]))
    rows += [
        (
            "decision rate (no-flag requests)",
            fmt_rate(sampling["decision"]) + (f" vs configured {conf / 100:.4f}" if conf is not None else ""),
            verdicts.get("sampling", ""),
        ),
    ]
    pred = sampling.get("prediction") or {}
    if pred.get("checked"):
        rows.append(
            (
                "x-request-id rule prediction",
                f"{pred['mismatches']} mismatches of {pred['checked']} requests",
                verdicts.get("sampling_prediction", ""),
            )
        )
    mesh = summary["mesh"]
    rows.append(("mesh collection rate", fmt_rate(mesh["collection"]), verdicts.get("mesh_collection", "")))
    leaks = f"{mesh['partial']} / {mesh['unknown']} / {mesh['leaked']}"
    if "leak_checked" in mesh:
        leaks += f" ({mesh['leaked']} leaked of {mesh['leak_checked']} queried)"
    rows.append(("mesh partial / unknown / leaked", leaks, verdicts.get("no_leaks", "")))
    ref = summary.get("reference")
    if ref and ref.get("started"):
        rows.append(
            (
                "reference collection rate",
                fmt_rate(ref["collection"])
                + f"; started {ref['started']}, exported {ref['exported']}, failed {ref['failed']}, dropped {ref['dropped']}",
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
    prop = summary["propagation"]
    rows.append(
        (
            "injected trace ids kept",
            f"upstream {prop['k']}/{prop['n']}, backend {prop['backend']['k']}/{prop['backend']['n']}",
            "",
        )
    )
    return rows


VIOLATION_KINDS = ("decision", "trace_id", "request_id", "leak")


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def header_mode_totals(summary: dict[str, Any]) -> tuple[int, int]:
    """(requests checked against the profile's expectations, requests that broke one)."""
    modes = [m for m in (summary.get("modes") or {}).values() if isinstance(m, dict)]
    return (
        sum(_count(m.get("expectation_checked")) for m in modes),
        sum(_count(m.get("expectation_violations")) for m in modes),
    )


def header_mode_rows(summary: dict[str, Any]) -> list[list[object]]:
    """Per mode with something to check (a definite expectation, or violations): mode, expected
    decision, requests, checked, violations, then violations by kind (VIOLATION_KINDS). Empty
    when the run has no header-modes verdict and no violation (nothing worth a table)."""
    modes = {str(k): v for k, v in (summary.get("modes") or {}).items() if isinstance(v, dict)}
    shown = "header_modes" in (summary.get("verdicts") or {}) or any(
        _count(m.get("expectation_violations")) for m in modes.values()
    )
    if not shown:
        return []
    rows: list[list[object]] = []
    for mode, m in modes.items():
        if not (m.get("expectation_definite") or _count(m.get("expectation_violations"))):
            continue
        raw_kinds = m.get("violations")
        kinds: dict[str, Any] = raw_kinds if isinstance(raw_kinds, dict) else {}
        rows.append(
            [
                mode,
                m.get("expected_decision") or "?",
                _count(m.get("requests")),
                _count(m.get("expectation_checked")),
                _count(m.get("expectation_violations")),
                *(_count(kinds.get(k)) for k in VIOLATION_KINDS),
            ]
        )
    return rows


HEADER_MODE_COLUMNS = ("mode", "expected decision", "requests", "checked", "violations", *VIOLATION_KINDS)


def verdict_causes(summary: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(verdict name, verdict, evidence, cause) for every verdict that did not pass and says why
    (`verdict_details`); evidence is "checked N (minimum M)"."""
    out: list[tuple[str, str, str, str]] = []
    details = summary.get("verdict_details") or {}
    for name, d in details.items() if isinstance(details, dict) else ():
        if not isinstance(d, dict) or not d.get("cause"):
            continue
        evidence = (
            f"checked {_count(d.get('checked'))} (minimum {_count(d.get('minimum'))}), {d.get('basis', '?')}"
        )
        out.append((str(name), str(d.get("verdict", "")), evidence, str(d["cause"])))
    return out


MODES_CAPTION = (
    "req/err: requests/errors; part/miss/leak/unkn: partial/missing/leaked/unknown; p50-p99: latency ms"
)


def render_terminal(summary: dict[str, Any]) -> list[Table]:
    """Rich tables: the headline numbers with verdicts, per header mode, then (when there is
    something to show) the header modes against the profile and why verdicts did not pass."""
    status = summary.get("status", "complete")
    # Run ids and mode names are user input: never let rich read them as markup.
    title = f"loadgen run {escape(str(summary['run_id']))}" + (" (PARTIAL)" if status != "complete" else "")
    head = Table(title=title, title_justify="left")
    head.add_column("measure")
    head.add_column("value (rate [95% CI] (k, n))")
    head.add_column("verdict")
    colours = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}
    for name, value, verdict in _headline_rows(summary):
        head.add_row(name, value, Text(verdict, style=colours.get(verdict, "")))
    modes = Table(
        title="per header mode (sampled = upstream saw the sampled flag)",
        title_justify="left",
        caption=MODES_CAPTION,
    )
    modes.add_column("mode", no_wrap=True)
    for col in ("req", "err", "sampled", "found", "part", "miss", "leak", "unkn", "p50", "p95", "p99"):
        modes.add_column(col, justify="right", no_wrap=True)
    for mode, m in summary["modes"].items():
        lat = summary["latency_ms"].get(mode, {})
        modes.add_row(
            escape(mode),
            str(m["requests"]),
            str(m["errors"]),
            str(m["decided_sampled"]),
            str(m["found"]),
            str(m["partial"]),
            str(m["missing"]),
            str(m["leaked"]),
            str(m["unknown"]),
            fmt_ms(lat.get("p50")),
            fmt_ms(lat.get("p95")),
            fmt_ms(lat.get("p99")),
        )
    tables = [head, modes]
    hm_rows = header_mode_rows(summary)
    if hm_rows:
        hm = Table(
            title="header modes vs the profile (requests that broke an expectation, by kind)",
            title_justify="left",
        )
        for i, col in enumerate(HEADER_MODE_COLUMNS):
            hm.add_column(col, justify="left" if i < 2 else "right", no_wrap=i == 0)
        for row in hm_rows:
            hm.add_row(*(escape(str(c)) for c in row))
        tables.append(hm)
    causes = verdict_causes(summary)
    if causes:
        why = Table(title="why", title_justify="left")
        for col in ("verdict", "", "evidence", "most likely cause"):
            why.add_column(col)
        for name, verdict, evidence, cause in causes:
            why.add_row(escape(name), Text(verdict, style=colours.get(verdict, "")), evidence, escape(cause))
        tables.append(why)
    return tables


def render_markdown(summary: dict[str, Any]) -> str:
    summary = redact_data(summary)  # report.md is shared: no credential from any URL it quotes
    lines: list[str] = []
    status = summary.get("status", "complete")
    lines.append(f"# loadgen run {md_code(summary['run_id'])}")
    lines.append("")
    if status != "complete":
        lines.append(
            f"> **Partial run** ({md_escape(summary.get('status_reason', status))}): numbers cover what was sent before the stop; unqueried traces are *unknown*, not missing."
        )
        lines.append("")
    target = summary.get("target", {})
    lines.append(
        f"Target: {md_escape(target.get('kind', '?'))} gateway {md_escape(target.get('gateway', '?'))} "
        f"(Host {md_escape(target.get('host', '?'))}), backend {md_escape(target.get('backend', '?'))}. "
        f"Requests: {summary['requests']['total']} ({summary['requests']['errors']} errors)."
    )
    lines.append("")
    lines.append("| measure | value (rate [95% CI] (k, n)) | verdict |")
    lines.append("|---|---|---|")
    for name, value, verdict in _headline_rows(summary):
        lines.append(f"| {md_escape(name)} | {md_escape(value)} | {md_escape(verdict)} |")
    lines.append("")
    if summary.get("profile"):
        lines.extend(profile_markdown(summary["profile"], md_escape))
    lines.append("## Per header mode")
    lines.append("")
    lines.append(
        "| mode | expected decision | requests | errors | sampled | found | partial | missing | leaked | unknown | p50 ms | p95 ms | p99 ms |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for mode, m in summary["modes"].items():
        lat = summary["latency_ms"].get(mode, {})
        cells = [
            mode, m.get("expected_decision") or "?", m["requests"], m["errors"], m["decided_sampled"], m["found"],
            m["partial"], m["missing"], m["leaked"], m["unknown"],
            fmt_ms(lat.get("p50")), fmt_ms(lat.get("p95")), fmt_ms(lat.get("p99")),
        ]  # fmt: skip
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    hm_rows = header_mode_rows(summary)
    if hm_rows:
        lines.append("")
        lines.append("## Header modes vs the profile")
        lines.append("")
        lines.append("| " + " | ".join(md_escape(c) for c in HEADER_MODE_COLUMNS) + " |")
        lines.append("|" + "---|" * len(HEADER_MODE_COLUMNS))
        lines.extend("| " + " | ".join(md_escape(c) for c in row) + " |" for row in hm_rows)
    causes = verdict_causes(summary)
    if causes:
        lines.append("")
        lines.append("## Why")
        lines.append("")
        lines.extend(
            f"- **{md_escape(name)}** {md_escape(verdict)} ({md_escape(evidence)}): {md_escape(cause)}"
            for name, verdict, evidence, cause in causes
        )
    lines.append("")
    mesh = summary["mesh"]
    lines.append("## Completeness")
    lines.append("")
    lines.append(
        f"A complete sampled trace has {mesh['expected_spans_per_trace']} spans from "
        f"{', '.join(md_escape(s) for s in mesh['expected_services'])}. "
        f"Spans per found trace: {md_escape(json.dumps(mesh['spans_per_found_trace']))}. "
        f"Spans carrying this run's id tag: {mesh['run_tag']['k']} of {mesh['run_tag']['n']}."
    )
    for label, key in (("Missing", "missing_examples"), ("Leaked", "leaked_examples")):
        if mesh.get(key):
            lines.append("")
            lines.append(f"{label} trace ids (examples): " + ", ".join(md_code(t) for t in mesh[key]))
    integrity = summary.get("integrity") or {}
    defects = integrity.get("defects") or {}
    if integrity.get("traces"):
        lines.append("")
        lines.append("## Propagation integrity")
        lines.append("")
        kept = integrity.get("injected_kept_end_to_end") or {}
        links = integrity.get("parent_links_ok") or {}
        lines.append(
            f"{integrity['traces']} traces judged; injected ids kept end to end: {kept.get('k', 0)} of "
            f"{kept.get('n', 0)}; parent links intact: {links.get('k', 0)} of {links.get('n', 0)}."
        )
        lines.append("")
        lines.append("| defect | count | examples | what it means |")
        lines.append("|---|---|---|---|")
        for name, d in defects.items():
            if not isinstance(d, dict):
                continue
            count = "not searched" if d.get("count") is None else d["count"]
            examples = ", ".join(md_code(t) for t in (d.get("examples") or [])[:3])
            lines.append(
                f"| {md_escape(name)} | {md_escape(count)} | {examples} | {md_escape(d.get('explanation', ''))} |"
            )
    notes = summary.get("notes") or []
    if notes:
        lines.append("")
        lines.append("## Notes")
        lines.append("")
        lines.extend(f"- {md_escape(n)}" for n in notes)
    lines.append("")
    return "\n".join(lines)
