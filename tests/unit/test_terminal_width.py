"""The terminal at any width (issue 13, item 1): tables rendered into a rich Console of a fixed
width keep every number whole (columns leave to a continuation table by priority), `--help` keeps
every flag name whole at 80 columns, nothing user-written is eaten as rich markup, and each
command ends on one PASS / FAIL / INCONCLUSIVE line with the report's path."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from loadgen import cli
from loadgen.cli import crash
from loadgen.cli.application import app
from loadgen.cli.console import outcome_text, unwrap
from loadgen.ledger import LiveCounts
from loadgen.report.render import capacity_table, render_terminal
from loadgen.report.terminal_md import markdown_renderables
from loadgen.run.load import _live_line
from tests.unit.test_render import FIXED, build_summary

WIDTHS = (80, 120)
BORDERS = "│┃"


def render(renderables: list[Any], width: int) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    for r in renderables:
        console.print(r)
    return console.export_text()


def table_rows(text: str) -> list[list[str]]:
    """Body rows of every table in `text`, a row's wrapped lines joined back (a line whose first
    cell, or all of whose other cells, are empty continues the row above; joined without a space)."""
    rows: list[list[str]] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            if not line.startswith(("┃", "│")):
                rows.append([])  # a border or title: the next line starts a new row
            continue
        cells = [c.strip() for c in line.strip()[1:-1].split("│")]
        continues = not cells[0] or not any(cells[1:])
        if rows and rows[-1] and continues and len(cells) == len(rows[-1]):
            rows[-1] = [a + b for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    return [r for r in rows if r]


def big_summary() -> dict[str, Any]:
    """FIXED with long mode names and six-digit counts: the run that lost its numbers at 80."""
    s = copy.deepcopy(FIXED)
    base = s["modes"]["none"]
    s["modes"] = {}
    s["latency_ms"] = {}
    for i, mode in enumerate(("none", "b3_multi_not_sampled_parent", "w3c_not_sampled_b3_no_flag")):
        counts = {k: (v * 111_111 + i if isinstance(v, int) else v) for k, v in base.items()}
        s["modes"][mode] = counts
        s["latency_ms"][mode] = {"n": 9, "p50": 1234.5 + i, "p95": 23456.7 + i, "p99": 345678.9 + i}
    return s


def mode_cells(text: str) -> dict[str, list[str]]:
    """Per mode, the cells of its rows in every table (the main one and its continuation)."""
    out: dict[str, list[str]] = {}
    for row in table_rows(text):
        out.setdefault(row[0], []).extend(row[1:])
    return out


@pytest.mark.parametrize("width", WIDTHS)
def test_per_mode_table_keeps_every_number_whole(width: int) -> None:
    s = big_summary()
    text = render(render_terminal(s)[1:2], width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    cells = mode_cells(text)
    for mode, m in s["modes"].items():
        lat = s["latency_ms"][mode]
        keys = ("requests", "errors", "decided_sampled", "found", "partial", "missing", "leaked", "unknown")
        wanted = [str(m[k]) for k in keys] + [f"{lat[p]:.1f}" for p in ("p50", "p95", "p99")]
        assert sorted(cells[mode]) == sorted(wanted), (mode, text)


def test_per_mode_table_is_one_table_when_it_fits() -> None:
    text = render(render_terminal(big_summary())[1:2], 200)
    assert "(continued)" not in text
    assert len(table_rows(text)) == 3
    # at 80 columns the latencies move to a continuation table keyed by the mode
    narrow = render(render_terminal(big_summary())[1:2], 80)
    assert "per header mode (continued)" in narrow
    assert len(table_rows(narrow)) == 6


@pytest.mark.parametrize("width", WIDTHS)
def test_headline_numbers_are_whole_and_the_run_id_is_verbatim(width: int) -> None:
    s = {**big_summary(), "run_id": "nightly[eu-west]"}
    text = render(render_terminal(s)[:1], width)
    assert "loadgen run nightly[eu-west]" in text and "…" not in text
    values = {row[0]: row[1] for row in table_rows(text)}
    words = " ".join(values.values()).split()
    for token in ("25.00%", "[7.15%,", "59.07%]", "(k=2,", "n=8)", "60.00%", "[23.07%,", "88.24%]"):
        assert token in words, (token, text)


CAPACITY_ROWS = [
    ["step", "load", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "decision", "collection",
     "reference", "ingest spans/s", "bounds"],
    ["0", "2 users (1200 req/s)", "1559.2", "1.1", "1.9", "2.6", "0.0% (0/14032)", "10.1% (1410/14032)",
     "100.0% (1410/1410)", "100.0% (45/45)", "3120", "ok"],
    ["1", "6 users (3600 req/s)", "1261.0", "3.9", "9.7", "13.6", "0.1% (13/11349)", "10.0% (1135/11349)",
     "97.1% (1102/1135)", "100.0% (45/45)", "2522", "KNEE: throughput, latency"],
]  # fmt: skip


@pytest.mark.parametrize("width", WIDTHS)
def test_capacity_table_keeps_every_number_whole(width: int) -> None:
    text = render([capacity_table(CAPACITY_ROWS, "cap[1]")], width)
    assert "capacity cap[1]" in text and "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    by_step: dict[str, list[str]] = {}
    for row in table_rows(text):
        by_step.setdefault(row[0], []).extend(row[1:])
    for row in CAPACITY_ROWS[1:]:
        shown = " ".join(by_step[row[0]])
        for cell in row[2:]:
            for word in cell.split():  # text cells wrap at spaces, but no word (number) is cut
                assert word in shown, (word, text)


def test_calibrate_markdown_is_rendered_as_tables() -> None:
    md = "\n".join(
        [
            "# Sampling calibration `c1`", "", "**FAIL** (statistical): rejected.", "",
            "| | |", "|---|---|", "| decisions | 41 sampled of 4,150: 0.988 % |", "",
            "## Looks", "",
            "| look | planned | decisions | sampled | p-value | alpha | statistics | decision | runs |",
            "|---|---|---|---|---|---|---|---|---|",
            "| 1 | 2,073 | 2,075 | 25 | 0.0021 | 0.0001 | continue | continue | look01 |",
        ]
    )  # fmt: skip
    text = render(markdown_renderables(md), 80)
    assert "|---" not in text and "**" not in text and "`" not in text
    assert "Sampling calibration c1" in text and "FAIL (statistical): rejected." in text
    cells = [c for row in table_rows(text) for c in row]
    for value in (
        "2,073",
        "2,075",
        "25",
        "0.0021",
        "0.0001",
        "continue",
        "look01",
        "41 sampled of 4,150: 0.988 %",
    ):
        assert value in cells, (value, text)


# --- --help ------------------------------------------------------------------------------------

COMMANDS = (["run"], ["calibrate"], ["capacity"], ["gate"], ["doctor"], ["verify"], ["report"], ["probe"])


def flag_names(args: list[str]) -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    command: Any = group
    for name in args:
        command = command.commands[name]
    return [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_help_keeps_every_flag_name_whole_at_80_columns(args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.output
    names = {w for line in lines for w in re.split(r"[\s│]+", line) if w.startswith("--")}
    missing = [f for f in flag_names(args) if f not in names]
    assert not missing, missing


def test_help_shows_brackets_and_unwraps_docstrings() -> None:
    gate = CliRunner().invoke(app, ["gate", "--help"], env={"COLUMNS": "80"}).output
    assert "TOML with a [gates]" in " ".join(gate.split())
    # a docstring wrapped by hand is one paragraph per blank line, rewrapped at the width
    assert unwrap("One line\n    broken by hand.\n\n    Second\n    paragraph.") == (
        "One line broken by hand.\n\nSecond paragraph."
    )
    run = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "120"}).output
    lines = [line.strip() for line in run.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Without --gateway"))
    intro = lines[start : lines.index("", start)]
    # rich fills each line to the width: a hand-wrapped docstring left lines far shorter
    assert len(intro) >= 2 and all(len(line) > 100 for line in intro[:-1]), intro


def test_an_error_naming_a_toml_table_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(crash, "_crash_dir", None)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps(build_summary()))
    toml = tmp_path / "loadgen.toml"
    toml.write_text("[gates]\nbogus = 1\n")
    monkeypatch.setattr("sys.argv", ["loadgen", "gate", str(run_dir), "--config", str(toml)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert "[gates]" in err and "unknown gate 'bogus'" in err, err


# --- the outcome line and the live line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "line"),
    [
        (0, "PASS  r/x/report.html"),
        (1, "FAIL  r/x/report.html"),
        (3, "INCONCLUSIVE  r/x/report.html"),
        (4, "FAIL  r/x/report.html  (a component failed; partial report)"),
        (130, "INCONCLUSIVE  r/x/report.html  (interrupted; partial report)"),
    ],
)
def test_outcome_line(code: int, line: str) -> None:
    assert outcome_text(code, Path("r/x/report.html")).plain == line
    assert outcome_text(0, Path("r/[x]/c.md"), "knee: 6 users").plain == "PASS  r/[x]/c.md  (knee: 6 users)"


def test_live_line_shows_the_decision_free_share_next_to_the_configured_rate() -> None:
    # 200 decision-free requests, 20 sampled (10 %); 100 forced sampled: 40 % over all modes
    live = LiveCounts(requests=300, sampled=120, decided=300)
    live.by_mode = {"none": [200, 20], "b3_multi_sampled": [100, 100]}
    line = _live_line(12.0, live, None, 10.0)
    assert "decision-free sampled 10.0% (configured 10%)" in line
    assert "all modes sampled 40.0%" in line
