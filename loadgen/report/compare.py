"""A run against a baseline run (pure): what changed, and whether it is more than noise.

For rates the 95 % intervals of both runs are compared: intervals that do not overlap are a
real change ("changed"); overlapping ones are "within noise". Counts and latencies are shown
with their difference; verdicts that flipped are listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from loadgen.report.render import md_code, md_escape
from loadgen.summary.io import as_summary
from loadgen.summary.model import Proportion, Summary

RATES: tuple[tuple[str, Callable[[Summary], Proportion | None]], ...] = (
    ("decision rate", lambda s: s.sampling.decision if s.sampling else None),
    ("mesh collection", lambda s: s.mesh.collection if s.mesh else None),
    ("reference collection", lambda s: s.reference.collection if s.reference else None),
    ("propagation (upstream kept injected ids)", lambda s: s.propagation),
)
VALUES: tuple[tuple[str, Callable[[Summary], float | int | None]], ...] = (
    ("requests", lambda s: s.requests.total if s.requests else None),
    ("errors", lambda s: s.requests.errors if s.requests else None),
    ("leaked traces", lambda s: s.mesh.leaked if s.mesh else None),
    (
        "prediction mismatches",
        lambda s: s.sampling.prediction.mismatches if s.sampling and s.sampling.prediction else None,
    ),
    ("time to queryable p99 (s)", lambda s: s.queryable.t99_s if s.queryable else None),
)


def _rate(p: Proportion) -> float:
    return p.rate if p.rate is not None else p.k / p.n


def _rate_row(name: str, cur: Proportion | None, base: Proportion | None) -> dict[str, Any]:
    row: dict[str, Any] = {"measure": name, "baseline": None, "current": None, "delta": None, "change": "n/a"}
    if cur is None or base is None or not cur.n or not base.n:
        return row
    row.update(baseline=_rate(base), current=_rate(cur), delta=_rate(cur) - _rate(base))
    (cl, ch), (bl, bh) = cur.ci95, base.ci95
    row["change"] = "changed" if ch < bl or cl > bh else "within noise"
    row["baseline_ci95"], row["current_ci95"] = [bl, bh], [cl, ch]
    return row


def _value_row(name: str, cur: float | int | None, base: float | int | None) -> dict[str, Any]:
    numbers = cur is not None and base is not None
    return {
        "measure": name,
        "baseline": base,
        "current": cur,
        "delta": (cur - base) if cur is not None and base is not None else None,
        "change": "n/a" if not numbers else ("same" if cur == base else "different"),
    }


def _p99(s: Summary, mode: str) -> float | None:
    lat = s.latency_ms.get(mode)
    return lat.p99 if lat else None


def compare_summaries(
    current: Summary | Mapping[str, Any], baseline: Summary | Mapping[str, Any]
) -> dict[str, Any]:
    cur, base = as_summary(current), as_summary(baseline)
    rows = [_rate_row(name, get(cur), get(base)) for name, get in RATES]
    rows += [_value_row(name, get(cur), get(base)) for name, get in VALUES]
    for mode in sorted(set(cur.latency_ms) | set(base.latency_ms)):
        rows.append(_value_row(f"p99 ms {mode}", _p99(cur, mode), _p99(base, mode)))
    flipped = [
        {"verdict": k, "baseline": base.verdicts.get(k), "current": cur.verdicts.get(k)}
        for k in sorted(set(cur.verdicts) | set(base.verdicts))
        if cur.verdicts.get(k) != base.verdicts.get(k)
    ]
    return {"current": cur.run_id, "baseline": base.run_id, "rows": rows, "verdict_changes": flipped}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def render_comparison_markdown(cmp: dict[str, Any]) -> str:
    lines = [
        f"# {md_code(cmp['current'])} compared with baseline {md_code(cmp['baseline'])}",
        "",
        "Rates: intervals that do not overlap are a real change; overlapping ones are within noise.",
        "",
        "| measure | baseline | current | delta | change |",
        "|---|---|---|---|---|",
    ]
    for row in cmp["rows"]:
        cells = [
            row["measure"],
            _fmt(row["baseline"]),
            _fmt(row["current"]),
            _fmt(row["delta"]),
            row["change"],
        ]
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    lines.append("")
    if cmp["verdict_changes"]:
        lines.append("Verdicts that changed:")
        lines.append("")
        for v in cmp["verdict_changes"]:
            lines.append(
                f"- {md_escape(v['verdict'])}: {md_escape(v['baseline'])} -> {md_escape(v['current'])}"
            )
    else:
        lines.append("No verdict changed.")
    lines.append("")
    return "\n".join(lines)
