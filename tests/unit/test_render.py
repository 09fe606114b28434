"""loadgen.report.render: Markdown escaping of untrusted text, the Markdown report, terminal tables."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from loadgen.analysis.reconcile import Expectation, TraceObservation, reconcile_mesh, reconcile_reference
from loadgen.analysis.verdicts import run_verdicts
from loadgen.backends.base import FetchStatus
from loadgen.mesh.modes import HeaderMode
from loadgen.report.render import fmt_ms, fmt_rate, md_escape, render_json, render_markdown, render_terminal

MD_SPECIAL = set("\\`*_{}[]<>()#+!|~")


def unescaped_positions(text: str, char: str) -> list[int]:
    """Positions of `char` not preceded by an odd run of backslashes (i.e. not escaped)."""
    out = []
    for i, ch in enumerate(text):
        if ch != char:
            continue
        run = 0
        while i - run - 1 >= 0 and text[i - run - 1] == "\\":
            run += 1
        if run % 2 == 0:
            out.append(i)
    return out


def md_unescape(text: str) -> str:
    """Inverse of Markdown backslash escapes and `&amp;`."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif text.startswith("&amp;", i):
            out.append("&")
            i += 5
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def table_cells(line: str) -> list[str]:
    """Split a Markdown table row on its unescaped pipes."""
    cuts = unescaped_positions(line, "|")
    assert cuts and cuts[0] == 0 and cuts[-1] == len(line) - 1, line
    return [line[a + 1 : b].strip() for a, b in zip(cuts, cuts[1:], strict=False)]


# --- md_escape -----------------------------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    "a | b || c",
    "`code` and ``double``",
    "line1\nline2\r\nline3",
    "bell\x07 esc\x1b[31m nul\x00 del\x7f",
    "tab\tsep\u2028para\u2029end",
    "[link](javascript:alert(1)) ![img](x)",
    "**bold** _em_ ~~strike~~ # heading + list",
    "back\\slash\\|pipe\\<lt",
    "&lt;already&gt; & amp",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_md_escape_hostile_text(text: str) -> None:
    out = md_escape(text)
    assert unescaped_positions(out, "<") == [], out
    assert unescaped_positions(out, ">") == [], out
    assert unescaped_positions(out, "|") == [], out
    assert unescaped_positions(out, "`") == [], out
    assert "\n" not in out and "\r" not in out
    assert all(ch.isprintable() for ch in out), repr(out)
    assert all(out.startswith("&amp;", m.start()) for m in re.finditer("&", out))


def test_md_escape_control_characters_become_visible_codes() -> None:
    assert md_unescape(md_escape("a\nb")) == "a\\x0ab"
    assert md_unescape(md_escape("\x1b[0m")) == "\\x1b[0m"
    assert md_unescape(md_escape("\x00")) == "\\x00"


def test_md_escape_non_strings() -> None:
    assert md_escape(12) == "12"
    assert md_escape(None) == "None"
    assert md_escape(1.5) == "1.5"


@given(st.text())
def test_md_escape_output_is_printable_and_fully_escaped(text: str) -> None:
    out = md_escape(text)
    assert all(ch.isprintable() for ch in out)
    for special in MD_SPECIAL - {"\\"}:
        assert unescaped_positions(out, special) == []


@given(st.text().filter(str.isprintable))
def test_md_escape_round_trips_printable_text(text: str) -> None:
    assert md_unescape(md_escape(text)) == text


def test_fmt_helpers() -> None:
    assert fmt_rate(None) == "n/a (n=0)"
    assert fmt_rate({"k": 0, "n": 0, "rate": None, "ci95": [0.0, 1.0]}) == "n/a (n=0)"
    assert (
        fmt_rate({"k": 1, "n": 4, "rate": 0.25, "ci95": [0.04, 0.7]}) == "25.00% [4.00%, 70.00%] (k=1, n=4)"
    )
    assert fmt_ms(None) == "-" and fmt_ms(3.0) == "3.0" and fmt_ms(12.34) == "12.3"


# --- a summary built by the reconciler and the verdicts ------------------------------------------

EXPECT = Expectation(spans_per_trace=2, services=("gateway", "echo"), configured_percent=50.0)


def tid(i: int) -> str:
    return f"{0xBEEF000000000000 + i:016x}{i:016x}"


def xrid(head: int, reason: str) -> str:
    return f"{head:08x}-0000-{reason}000-8000-000000000000"


def build_summary(run_id: str = "20261127-101500-ab12cd", hostile: str | None = None) -> dict[str, Any]:
    ledger: list[dict[str, Any]] = []
    obs: dict[str, TraceObservation] = {}
    complete = TraceObservation(FetchStatus.FOUND, 2, ("echo", "gateway"), run_tagged=2)
    for i in range(6):  # NONE: 3 sampled + found, 3 not sampled + absent
        sampled = i % 2 == 0
        ledger.append(
            {"rid": f"n{i}", "mode": "none", "status": 200, "ts": 100.0 + i, "latency_ms": 1.0 + i,
             "up_trace": tid(i), "up_flag": "1" if sampled else "0",
             "up_xrid": xrid(10 + i if sampled else 7000 + i, "9" if sampled else "4")}
        )  # fmt: skip
        obs[tid(i)] = complete if sampled else TraceObservation(FetchStatus.MISSING)
    for i in range(10, 14):  # forced sampled, id kept; one missing
        ledger.append(
            {"rid": f"f{i}", "mode": HeaderMode.B3_SINGLE_SAMPLED.value, "status": 200, "ts": 101.0,
             "latency_ms": 2.0 * i, "inj_trace": tid(i), "inj_flag": "1", "up_trace": tid(i), "up_flag": "1"}
        )  # fmt: skip
        obs[tid(i)] = complete if i != 13 else TraceObservation(FetchStatus.MISSING)
    ledger.append({"rid": "e", "mode": "b3_multi_no_flag", "status": 502, "ts": 102.0, "latency_ms": 3.0})
    if hostile is not None:
        bad_trace = hostile.lower()
        ledger.append(
            {"rid": "h", "mode": hostile, "status": 200, "ts": 103.0, "latency_ms": 1.0,
             "up_trace": bad_trace, "up_flag": "1"}
        )  # fmt: skip
        obs[bad_trace.strip()] = TraceObservation(FetchStatus.MISSING)
    reference = [(tid(100 + i), "exported", 1) for i in range(3)] + [(tid(200), "failed", 1)]
    for i in range(3):
        obs[tid(100 + i)] = TraceObservation(FetchStatus.FOUND, 1, ("ref",))
    summary: dict[str, Any] = {"schema_version": 1, "run_id": run_id}
    summary.update(reconcile_mesh(ledger, obs, EXPECT))
    summary["reference"] = reconcile_reference(reference, obs, {"spans_started": 4})
    summary["verdicts"] = run_verdicts(summary, 0.99)
    summary["status"] = "complete"
    summary["target"] = {"kind": "embedded", "gateway": "http://127.0.0.1:18080", "host": "httpbin.local",
                         "backend": "zipkin:http://127.0.0.1:19411"}  # fmt: skip
    summary["notes"] = []
    return summary


def section(markdown: str, heading: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def test_markdown_of_a_reconciled_summary_has_run_id_verdicts_and_mode_rows() -> None:
    summary = build_summary()
    md = render_markdown(summary)
    assert md.splitlines()[0] == "# loadgen run `20261127-101500-ab12cd`"
    assert "Requests: 11 (1 errors)." in md
    headline = [table_cells(line) for line in md.splitlines()[:20] if line.startswith("| ")][1:]
    by_name = {md_unescape(c[0]): (md_unescape(c[1]), c[2]) for c in headline}
    v = summary["verdicts"]
    assert by_name["decision rate (no-flag requests)"][1] == v["sampling"] == "pass"
    assert by_name["x-request-id rule prediction"] == ("0 mismatches of 6 requests", v["sampling_prediction"])
    assert by_name["mesh collection rate"][1] == v["mesh_collection"] == "fail"  # 6 of 7 found
    assert "(k=6, n=7)" in by_name["mesh collection rate"][0]
    # the 3 not-sampled `none` requests were queried and absent: 0 leaked of 3 queried
    assert by_name["mesh leaked / unknown"] == ("0 / 0 (0 leaked of 3 queried)", "pass")
    # no sampled trace came back with spans missing: no finding
    assert by_name["mesh partial traces"] == ("none of 7 sampled traces", "")
    # 3 of 3 reference traces: a Wilson low end of 0.44, far from 0.99 -> not enough evidence
    assert by_name["reference collection rate"][1] == v["reference_collection"] == "inconclusive"
    # b3_single_sampled x4 kept their ids and were traced: 4 checked, none broken
    assert by_name["header modes vs the profile"] == ("0 violations in 4 checked requests", "pass")
    assert by_name["reference collection rate"][0].endswith("; started 4, exported 3, failed 1, dropped 0")
    assert by_name["injected trace ids kept"] == ("upstream 4/4, backend 3/4", "")

    rows = [table_cells(line) for line in section(md, "## Per header mode") if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert header[0] == "mode" and len(header) == 13
    assert [md_unescape(r[0]) for r in body] == list(summary["modes"])
    for row in body:
        m = summary["modes"][md_unescape(row[0])]
        assert md_unescape(row[1]) == (m["expected_decision"] or "?")
        counts = [m[k] for k in ("requests", "errors", "decided_sampled", "found", "partial", "missing", "leaked", "unknown")]  # fmt: skip
        assert [int(c) for c in row[2:10]] == counts
        lat = summary["latency_ms"][md_unescape(row[0])]
        assert row[10:] == [fmt_ms(lat["p50"]), fmt_ms(lat["p95"]), fmt_ms(lat["p99"])]


def test_markdown_with_hostile_strings_keeps_its_structure() -> None:
    hostile = "<img src=x onerror=alert(1)>|`\n# injected\r\x1b[31m"
    summary = build_summary(run_id="run|<b>`x`</b>\n# h", hostile=hostile)
    summary["target"]["host"] = "evil.com|<script>"
    summary["notes"] = ["note with\nnewline | pipe <i>", "**bold** [x](javascript:y)"]
    benign = build_summary(run_id="run", hostile="benign")
    benign["notes"] = ["a", "b"]
    md, md_benign = render_markdown(summary), render_markdown(benign)
    lines = md.split("\n")
    assert len(lines) == len(md_benign.split("\n"))  # no injected line breaks
    assert all(ch.isprintable() for line in lines for ch in line)
    for line in lines:
        assert unescaped_positions(line, "<") == [], line
    for line in lines:
        if line.startswith("|"):
            cuts = len(unescaped_positions(line, "|"))
            assert cuts in (4, 10, 14), line  # 3, 9 or 13 columns, nothing more
    headings = [line for line in lines if line.startswith("#")]
    assert headings[1:] == [line for line in md_benign.split("\n") if line.startswith("#")][1:]
    assert headings[0].startswith("# loadgen run run\\|\\<b\\>")  # escaped, not a code span: it holds < and |
    # the hostile mode and trace id are still shown, escaped
    rows = [table_cells(line) for line in section(md, "## Per header mode") if line.startswith("| ")]
    assert any(md_unescape(r[0]).startswith("<img src=x") for r in rows)
    assert "Missing trace ids (examples): " in md


# --- exact output ---------------------------------------------------------------------------------

FIXED: dict[str, Any] = {
    "run_id": "20261127-101500-ab12cd",
    "status": "complete",
    "target": {
        "kind": "embedded",
        "gateway": "http://127.0.0.1:18080",
        "host": "httpbin.istioinaction.io",
        "backend": "zipkin:http://127.0.0.1:19411",
    },
    "requests": {"total": 12, "errors": 1},
    "sampling": {
        "configured_percent": 25.0,
        "decision": {"k": 2, "n": 8, "rate": 0.25, "ci95": [0.0715, 0.5907]},
        "verdict": "pass",
        "p_value": 1.0,
        "prediction": {"checked": 8, "mismatches": 0, "examples": []},
    },
    "mesh": {
        "expected_spans_per_trace": 2,
        "expected_services": ["gateway", "echo"],
        "collection": {"k": 3, "n": 5, "rate": 0.6, "ci95": [0.2307, 0.8824]},
        "partial": 1,
        "unknown": 0,
        "leaked": 0,
        "leaked_examples": [],
        "missing_examples": ["463ac35c9f6413ad48485a3953bb6124"],
        "spans_per_found_trace": {"1": 1, "2": 3},
        "run_tag": {"k": 7, "n": 7},
    },
    "reference": {
        "started": 3,
        "exported": 2,
        "failed": 1,
        "dropped": 0,
        "collection": {"k": 2, "n": 2, "rate": 1.0, "ci95": [0.3424, 1.0]},
        "unknown": 0,
    },
    "propagation": {"k": 3, "n": 3, "rate": 1.0, "ci95": [0.4385, 1.0], "backend": {"k": 3, "n": 3}},
    "modes": {
        "none": {
            "requests": 9,
            "errors": 1,
            "decided_sampled": 2,
            "decided_not_sampled": 6,
            "found": 0,
            "partial": 1,
            "missing": 1,
            "leaked": 0,
            "not_sampled": 6,
            "unknown": 1,
            "expected_decision": "proxy",
            "expectation_violations": 0,
        },
        "b3_multi_sampled": {
            "requests": 3,
            "errors": 0,
            "decided_sampled": 3,
            "decided_not_sampled": 0,
            "found": 3,
            "partial": 0,
            "missing": 0,
            "leaked": 0,
            "not_sampled": 0,
            "unknown": 0,
            "expected_decision": "forced_sampled",
            "expectation_violations": 0,
        },
    },  # fmt: skip
    "latency_ms": {
        "none": {"n": 8, "p50": 2.34, "p95": 9.87, "p99": 12.0},
        "b3_multi_sampled": {"n": 0, "p50": None, "p95": None, "p99": None},
    },
    "verdicts": {
        "sampling": "pass",
        "mesh_collection": "fail",
        "no_leaks": "pass",
        "sampling_prediction": "pass",
        "reference_collection": "pass",
    },
    "notes": ["settle 6 s", "1 ledger line(s) were truncated"],
}

FIXED_MARKDOWN = """\
# loadgen run `20261127-101500-ab12cd`

Target: embedded gateway http://127.0.0.1:18080 (Host httpbin.istioinaction.io), backend zipkin:http://127.0.0.1:19411. Requests: 12 (1 errors).

| measure | value (rate [95% CI] (k, n)) | verdict |
|---|---|---|
| decision rate \\(no-flag requests\\) | 25.00% \\[7.15%, 59.07%\\] \\(k=2, n=8\\) vs configured 25% | pass |
| x-request-id rule prediction | 0 mismatches of 8 requests | pass |
| mesh collection rate | 60.00% \\[23.07%, 88.24%\\] \\(k=3, n=5\\) | fail |
| mesh partial traces | 1 of 5 sampled traces \\(20.00%\\) miss spans | finding |
| mesh leaked / unknown | 0 / 0 | pass |
| reference collection rate | 100.00% \\[34.24%, 100.00%\\] \\(k=2, n=2\\); started 3, exported 2, failed 1, dropped 0 | pass |
| injected trace ids kept | upstream 3/3, backend 3/3 |  |

## Per header mode

| mode | expected decision | requests | errors | sampled | found | partial | missing | leaked | unknown | p50 ms | p95 ms | p99 ms |
|---|---|---|---|---|---|---|---|---|---|---|---|---|
| none | proxy | 9 | 1 | 2 | 0 | 1 | 1 | 0 | 1 | 2.3 | 9.9 | 12.0 |
| b3\\_multi\\_sampled | forced\\_sampled | 3 | 0 | 3 | 3 | 0 | 0 | 0 | 0 | - | - | - |

## Completeness

A complete sampled trace has 2 spans from gateway, echo. Spans per found trace: \\{"1": 1, "2": 3\\}. Spans carrying this run's id tag: 7 of 7.

Missing trace ids (examples): `463ac35c9f6413ad48485a3953bb6124`

## Notes

- settle 6 s
- 1 ledger line\\(s\\) were truncated
"""


def test_markdown_exact_output() -> None:
    assert render_markdown(FIXED) == FIXED_MARKDOWN


def test_markdown_exact_output_of_a_partial_run() -> None:
    partial = {**FIXED, "status": "partial", "status_reason": "interrupted"}
    banner = (
        "> **Partial run** (interrupted): numbers cover what was sent before the stop; "
        "unqueried traces are *unknown*, not missing.\n\n"
    )
    head, rest = FIXED_MARKDOWN.split("\n\n", 1)
    assert render_markdown(partial) == head + "\n\n" + banner + rest


def test_markdown_without_reference_prediction_or_examples() -> None:
    bare = json.loads(json.dumps(FIXED))
    bare["reference"] = {"started": 0}
    bare["sampling"]["prediction"] = {"checked": 0, "mismatches": 0}
    bare["mesh"]["missing_examples"] = []
    bare["notes"] = []
    md = render_markdown(bare)
    assert "reference collection rate" not in md
    assert "x-request-id rule prediction" not in md
    assert "Missing trace ids" not in md and "## Notes" not in md
    assert md.endswith("Spans carrying this run's id tag: 7 of 7.\n")


def test_render_json_round_trips() -> None:
    assert json.loads(render_json(FIXED)) == FIXED


# --- terminal ------------------------------------------------------------------------------------


def rendered(tables: list[Any]) -> str:
    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    for table in tables:
        console.print(table)
    return console.export_text()


def body_rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("│").split("│")] for line in text.splitlines() if line.startswith("│")
    ]


def test_render_terminal_mode_rows_match_the_summary_modes() -> None:
    summary = build_summary()
    head, modes, *rest = render_terminal(summary)
    assert modes.row_count == len(summary["modes"])
    rows = body_rows(rendered([modes]))
    assert [r[0] for r in rows] == list(summary["modes"])
    for row in rows:
        m = summary["modes"][row[0]]
        lat = summary["latency_ms"][row[0]]
        assert row[1:] == [
            str(m["requests"]), str(m["errors"]), str(m["decided_sampled"]), str(m["found"]),
            str(m["partial"]), str(m["missing"]), str(m["leaked"]), str(m["unknown"]),
            fmt_ms(lat["p50"]), fmt_ms(lat["p95"]), fmt_ms(lat["p99"]),
        ]  # fmt: skip
    head_rows = body_rows(rendered([head]))
    assert [r[0] for r in head_rows] == [
        "error share (load delivered)",
        "decision rate (no-flag requests)",
        "x-request-id rule prediction",
        "mesh collection rate",
        "mesh partial traces",
        "mesh leaked / unknown",
        "reference collection rate",
        "header modes vs the profile",
        "injected trace ids kept",
    ]
    assert [r[2] for r in head_rows] == [
        "fail",
        "pass",
        "pass",
        "fail",
        "",
        "pass",
        "inconclusive",
        "pass",
        "",
    ]
    # the one 502 of 11 requests is 9 % errors, above the default maximum of 5 %
    assert head_rows[0][1] == "9.09% (k=1 failed, n=11) vs maximum 5%"
    # then the header modes against the profile, and why two verdicts did not pass
    hm_rows = body_rows(rendered(rest[:1]))
    # b3_multi_no_flag must keep its injected id (definite), but its one request got a 502
    assert hm_rows == [
        ["b3_multi_no_flag", "proxy", "1", "0", "0", "0", "0", "0", "0"],
        ["b3_single_sampled", "forced_sampled", "4", "4", "0", "0", "0", "0", "0"],
    ]
    why_rows = body_rows(rendered(rest[1:]))
    assert [r[:2] for r in why_rows if r[0]] == [
        ["load_delivered", "fail"],
        ["mesh_collection", "fail"],
        ["reference_collection", "inconclusive"],
    ]


def test_render_terminal_title_marks_partial_runs() -> None:
    summary = build_summary()
    assert "loadgen run 20261127-101500-ab12cd" in rendered(render_terminal(summary)[:1])
    assert "(PARTIAL)" not in rendered(render_terminal(summary)[:1])
    summary["status"] = "partial"
    assert "loadgen run 20261127-101500-ab12cd (PARTIAL)" in rendered(render_terminal(summary)[:1])


@pytest.mark.parametrize("run_id", ["nightly[eu-west]", "smoke-[/x]"])
def test_render_terminal_shows_a_user_chosen_run_id_verbatim(run_id: str) -> None:
    """`--run-id` is free text; rich must not interpret it as console markup (a `[tag]` vanishes,
    an unmatched `[/x]` raises MarkupError when the table is printed)."""
    text = rendered(render_terminal(build_summary(run_id=run_id))[:1])
    assert f"loadgen run {run_id}" in text


@pytest.mark.parametrize("run_id", ["nightly_eu", "build#42 (retry)"])
def test_markdown_title_code_span_shows_the_run_id_verbatim(run_id: str) -> None:
    """The title puts the run id in a code span, where Markdown does not process backslash escapes
    (CommonMark 6.1): escaping there makes `nightly_eu` display as `nightly\\_eu`."""
    title = render_markdown({**FIXED, "run_id": run_id}).splitlines()[0]
    assert title.startswith("# loadgen run `") and title.endswith("`")
    assert title[len("# loadgen run `") : -1] == run_id


# --- header modes and causes ---------------------------------------------------------------------


def violating_summary() -> dict[str, Any]:
    """build_summary plus 5 b3_multi_sampled requests, 2 of which the upstream saw NOT sampled."""
    summary = build_summary()
    ledger = [
        {"rid": f"v{i}", "mode": HeaderMode.B3_MULTI_SAMPLED.value, "status": 200, "ts": 104.0, "latency_ms": 1.0,
         "inj_trace": tid(300 + i), "inj_flag": "1", "up_trace": tid(300 + i), "up_flag": "0" if i < 2 else "1"}
        for i in range(5)
    ]  # fmt: skip
    obs = {tid(300 + i): TraceObservation(FetchStatus.FOUND, 2, ("echo", "gateway")) for i in range(2, 5)}
    obs.update({tid(300 + i): TraceObservation(FetchStatus.MISSING) for i in range(2)})
    mesh = reconcile_mesh(ledger, obs, EXPECT)
    summary["modes"].update(mesh["modes"])
    summary["verdicts"] = run_verdicts(summary, 0.99)
    return summary


def test_markdown_shows_header_mode_violations_by_kind_and_why() -> None:
    summary = violating_summary()
    assert summary["verdicts"]["header_modes"] == "fail"
    md = render_markdown(summary)
    rows = [
        table_cells(line) for line in section(md, "## Header modes vs the profile") if line.startswith("| ")
    ]
    header, body = [md_unescape(c) for c in rows[0]], rows[1:]
    assert header == ["mode", "expected decision", "requests", "checked", "violations", "decision", "trace_id",
                      "request_id", "leak"]  # fmt: skip
    by_mode = {md_unescape(r[0]): [md_unescape(c) for c in r[1:]] for r in body}
    # 2 of the 5 forced-sampled requests were not traced: two decision violations
    assert by_mode["b3_multi_sampled"] == ["forced_sampled", "5", "5", "2", "2", "0", "0", "0"]
    why = [md_unescape(line) for line in section(md, "## Why") if line.startswith("- ")]
    header_modes = next(line for line in why if line.startswith("- **header_modes** fail"))
    assert "b3_multi_sampled: 2 of 5 not traced as forced" in header_modes
    assert "(checked 9 (minimum 1), exact)" in header_modes  # 4 b3_single_sampled + 5 b3_multi_sampled


def test_markdown_why_escapes_causes_naming_hostile_modes() -> None:
    summary = violating_summary()
    summary["verdict_details"]["header_modes"]["cause"] = "<img src=x> | `x`\n# h"
    md = render_markdown(summary)
    for line in md.split("\n"):
        assert unescaped_positions(line, "<") == [], line


def test_fmt_rate_of_a_null_estimate() -> None:
    assert fmt_rate(None) == "n/a (n=0)"


def test_markdown_and_html_show_what_the_probe_learned() -> None:
    """Issue 9: the profile is shown as "what loadgen learned about this mesh"; a fact not
    learned is marked, and span-derived text (a service name) is escaped."""
    from loadgen.mesh.profile import Forcing, MeshProfile, RequestIdHandling, SpanShape
    from loadgen.report.html import render_html

    hostile = "gw|<b>*x*</b>"
    profile = MeshProfile(
        "r-probe", "/headers", requests=24, answered=24, echo=True,
        shape=SpanShape(((hostile, "SERVER", 1),)), traces_sampled=10, traces_found=10,
        request_id=RequestIdHandling.REPLACED, client_trace_id=Forcing(8, 8, 8), reader="zipkin",
    )  # fmt: skip
    with_profile = {**FIXED, "profile": profile.to_dict()}
    md = render_markdown(with_profile)
    assert "## What loadgen learned about this mesh" in md
    section = md.split("## What loadgen learned about this mesh", 1)[1].split("\n## ", 1)[0]
    rows = [table_cells(line) for line in section.splitlines() if line.startswith("| ")][1:]
    assert rows and all(len(r) == 3 for r in rows)  # the service name's "|" did not split a cell
    by_name = {md_unescape(r[0]): md_unescape(r[1]) for r in rows}
    assert by_name["trace shape"] == f"1 span: {hostile} SERVER"
    assert by_name["client x-request-id"] == "replaced"
    assert by_name["time to queryable"] == "**unknown** (not learned)"
    assert unescaped_positions(section, "|") == [] or all(
        line.startswith("|") for line in section.splitlines() if "|" in line
    )
    assert "<b>" not in md.replace("\\<b\\>", "")
    html = render_html(with_profile)
    assert 'id="profile"' in html and "What loadgen learned about this mesh" in html
    assert "<b>*x*</b>" not in html and "&lt;b&gt;" in html
    assert 'id="profile"' not in render_html(FIXED) and "What loadgen learned" not in render_markdown(FIXED)
