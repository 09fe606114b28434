"""A run against a baseline run (pure): what changed, and whether it is more than noise.

For rates the 95 % intervals of both runs are compared: intervals that do not overlap are a
real change ("changed"); overlapping ones are "within noise". Counts and latencies are shown
with their difference; verdicts that flipped are listed.
"""

from __future__ import annotations

from typing import Any

from loadgen.report.render import md_code, md_escape

RATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decision rate", ("sampling", "decision")),
    ("mesh collection", ("mesh", "collection")),
    ("reference collection", ("reference", "collection")),
    ("propagation (upstream kept injected ids)", ("propagation",)),
)
VALUES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("requests", ("requests", "total")),
    ("errors", ("requests", "errors")),
    ("leaked traces", ("mesh", "leaked")),
    ("prediction mismatches", ("sampling", "prediction", "mismatches")),
    ("time to queryable p99 (s)", ("queryable", "t99_s")),
)


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _rate_row(name: str, cur: Any, base: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"measure": name, "baseline": None, "current": None, "delta": None, "change": "n/a"}
    if not (isinstance(cur, dict) and isinstance(base, dict)) or not cur.get("n") or not base.get("n"):
        return row
    row.update(baseline=base["rate"], current=cur["rate"], delta=cur["rate"] - base["rate"])
    (cl, ch), (bl, bh) = cur["ci95"], base["ci95"]
    row["change"] = "changed" if ch < bl or cl > bh else "within noise"
    row["baseline_ci95"], row["current_ci95"] = [bl, bh], [cl, ch]
    return row


def _value_row(name: str, cur: Any, base: Any) -> dict[str, Any]:
    numbers = isinstance(cur, int | float) and isinstance(base, int | float)
    return {
        "measure": name,
        "baseline": base,
        "current": cur,
        "delta": (cur - base) if numbers else None,
        "change": "n/a" if not numbers else ("same" if cur == base else "different"),
    }


def compare_summaries(current: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    rows = [_rate_row(name, _dig(current, p), _dig(baseline, p)) for name, p in RATES]
    rows += [_value_row(name, _dig(current, p), _dig(baseline, p)) for name, p in VALUES]
    for mode in sorted(set(current.get("latency_ms", {})) | set(baseline.get("latency_ms", {}))):
        rows.append(
            _value_row(
                f"p99 ms {mode}",
                _dig(current, ("latency_ms", mode, "p99")),
                _dig(baseline, ("latency_ms", mode, "p99")),
            )
        )
    cur_v, base_v = current.get("verdicts", {}), baseline.get("verdicts", {})
    flipped = [
        {"verdict": k, "baseline": base_v.get(k), "current": cur_v.get(k)}
        for k in sorted(set(cur_v) | set(base_v))
        if cur_v.get(k) != base_v.get(k)
    ]
    return {
        "current": current.get("run_id"),
        "baseline": baseline.get("run_id"),
        "rows": rows,
        "verdict_changes": flipped,
    }


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
