"""The report's comparison with a baseline run (`loadgen report --baseline`): the table of
`loadgen.report.compare.compare_summaries`, each row with the rule that decided, and the
verdicts that flipped (pure; every text escaped)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.report.compare import RULES_TEXT, change_text, value_text
from loadgen.report.html.common import as_dict, as_list, badge, esc


def _row(row: Mapping[str, Any]) -> str:
    """One measure; a different one is marked (a change, not necessarily for the worse)."""
    cls = ' class="warn"' if row.get("change") == "different" else ""
    nums = "".join(
        f'<td class="num">{esc(value_text(row, k))}</td>' for k in ("baseline", "current", "delta")
    )
    return f"<tr><td>{esc(row.get('measure', '?'))}</td>{nums}<td{cls}>{esc(change_text(row))}</td></tr>"


def comparison_section(cmp: Mapping[str, Any] | None) -> str:
    """`<section id="comparison">` for a comparison dict, or "" when there is none."""
    if not cmp:
        return ""
    rows = [as_dict(r) for r in as_list(cmp.get("rows"))]
    head = "".join(
        f'<th class="num">{h}</th>' if h in ("baseline", "current", "delta") else f"<th>{h}</th>"
        for h in ("measure", "baseline", "current", "delta", "change")
    )
    flips = [as_dict(v) for v in as_list(cmp.get("verdict_changes"))]
    flipped = (
        "<ul>"
        + "".join(
            f"<li>{esc(v.get('verdict'))}: {badge(v.get('baseline'))} → {badge(v.get('current'))}</li>"
            for v in flips
        )
        + "</ul>"
        if flips
        else '<p class="hint">No verdict changed.</p>'
    )
    different = sum(1 for r in rows if r.get("change") == "different")
    return (
        f'<section id="comparison"><h2>Compared with baseline <code>{esc(cmp.get("baseline", "?"))}</code></h2>'
        f'<p class="hint">{different} of {len(rows)} measures different. {esc(RULES_TEXT)}</p>'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>'
        + "".join(_row(r) for r in rows)
        + f"</tbody></table></div><h3>Verdicts</h3>{flipped}</section>"
    )
