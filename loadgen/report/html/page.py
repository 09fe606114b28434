"""The report page (pure): the document around the sections, its style sheet and its header."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loadgen import __version__
from loadgen.report import plots
from loadgen.report.html.capacity import capacity_section, report_label, steps_of
from loadgen.report.html.cards import cards_section, overall_section, overall_word
from loadgen.report.html.charts import charts_section
from loadgen.report.html.common import as_dict, esc, utc_text, verdict_class
from loadgen.report.html.comparison import comparison_section
from loadgen.report.html.sections import (
    details_section,
    header_modes_table,
    modes_table,
    numbers_table,
    profile_section,
    why_section,
)

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


def _header(summary: Mapping[str, Any], label: str = "loadgen run") -> str:
    """The report's kind and run id, the target and when the run started (and was verified)."""
    target = as_dict(summary.get("target"))
    status = str(summary.get("status", "complete"))
    meta = (
        f"{esc(target.get('kind', '?'))} target · gateway <code>{esc(target.get('gateway', '?'))}</code> "
        f"(Host <code>{esc(target.get('host', '?'))}</code>) · backend <code>{esc(target.get('backend', '?'))}</code>"
        f"<br/>started {esc(utc_text(summary.get('started_at')))} · "
        + (
            "complete run"
            if status == "complete"
            else f'<span class="badge inconclusive">{esc(status)}</span>'
        )
    )
    if summary.get("verified_at") is not None:
        meta += f" · verified {esc(utc_text(summary.get('verified_at')))}"
    return (
        f'<header><h1><span class="label">{esc(label)}</span> <span id="run-id">{esc(summary.get("run_id", "?"))}</span></h1>'
        f'<p class="meta">{meta}</p></header>'
    )


def render_html(
    summary: Mapping[str, Any],
    timeseries: Mapping[str, Any] | None = None,
    *,
    steps: Sequence[Mapping[str, Any]] | None = None,
    knee: int | None = None,
    comparison: Mapping[str, Any] | None = None,
) -> str:
    """The report page (pure). `timeseries` is `ledger_timeseries(...)`'s dict (None: no over-time
    charts). `steps` are capacity steps as loadgen.capacity writes them to steps.json (`label`,
    `target_rps` or `users`, `achieved_rps`, `p50_ms`/`p99_ms`, `collection` and `errors` as
    `{k, n, rate, ci95}`, `breaches`, `knee: true` on the knee step) and `knee` is the index of
    the knee step; both are read from `summary["capacity"]` (`{"steps": [...], "knee": index}`)
    when `steps` is not given. `comparison` is `compare_summaries`'s dict against a baseline run
    (`loadgen report --baseline`): a section after the cards."""
    ts: Mapping[str, Any] = timeseries or {}
    if steps is None:
        steps, knee = steps_of(summary.get("capacity"))
    label = report_label(steps)
    body = [_header(summary, label), overall_section(summary), cards_section(summary)]
    body.append(comparison_section(comparison))
    if steps:
        body.append(capacity_section(steps, knee))
    body += [
        charts_section(summary, ts),
        modes_table(summary),
        header_modes_table(summary),
        why_section(summary),
        profile_section(summary),
        numbers_table(summary),
        details_section(summary),
        f"<footer>Generated by loadgen {esc(__version__)} from summary.json (schema "
        f"{esc(summary.get('schema_version', '?'))}) and the run's ledger. Self-contained: no scripts, "
        "no network; the numbers are also in summary.json, modes.csv and timeseries.csv.</footer>",
    ]
    title = f"{label} {plots.visible_text(summary.get('run_id', '?'))}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en" xmlns="http://www.w3.org/1999/xhtml"><head><meta charset="utf-8"/>'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'\"/>"
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>'
        '<meta name="color-scheme" content="light"/>'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f'<body class="{verdict_class(overall_word(summary))}"><main>'
        + "".join(body)
        + "</main></body></html>\n"
    )
