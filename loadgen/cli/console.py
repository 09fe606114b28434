"""The terminal side every command shares: the two consoles, one-line errors, the spinner, and
the option checks made before any command starts work."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from typer import rich_utils as typer_rich
from typer._click import core as click_core  # typer >= 0.25 vendors click
from typer._click import exceptions as click_errors
from typer.core import TyperCommand

from loadgen.exitcodes import (
    EXIT_COMPONENT_FAILED,
    EXIT_ERROR,
    EXIT_INCONCLUSIVE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_VERDICT_FAILED,
)
from loadgen.redact import redact_text
from loadgen.validate import http_url_problem, output_dir_problem

T = TypeVar("T")

out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error is one line, however long


def error_line(message: str) -> str:
    """`message` as one line for the terminal: credentials redacted, Rich markup escaped."""
    return escape(" ".join(redact_text(message).split()))


def fatal(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """The one way a command stops on a bad input: an `error:` line, then exit `code`."""
    err.print(f"[bold red]error:[/] {error_line(message)}")
    raise typer.Exit(code)


def note(message: str) -> None:
    err.print(f"[yellow]note:[/] {error_line(message)}")


def with_status(label: str, work: Callable[[Callable[[str], None]], T]) -> T:
    """`work(status)` under a spinner on stderr; each status message replaces the spinner's text."""
    with err.status(label) as spinner:
        return work(lambda msg: spinner.update(error_line(msg)))


# The one word a run ends on, by its exit code, and what it adds when the word alone misleads.
OUTCOMES: dict[int, tuple[str, str]] = {
    EXIT_OK: ("PASS", ""),
    EXIT_VERDICT_FAILED: ("FAIL", ""),
    EXIT_INCONCLUSIVE: ("INCONCLUSIVE", ""),
    EXIT_COMPONENT_FAILED: ("FAIL", "a component failed; partial report"),
    EXIT_INTERRUPTED: ("INCONCLUSIVE", "interrupted; partial report"),
}
OUTCOME_STYLES = {"PASS": "bold green", "FAIL": "bold red", "INCONCLUSIVE": "bold yellow"}


def outcome_text(exit_code: int, report: Path, detail: str = "") -> Text:
    """`PASS  reports/<id>/report.html`: the last line of run, calibrate, capacity and verify,
    the overall outcome of the exit code and where to read why. The path is shown as is."""
    word, why = OUTCOMES.get(exit_code, ("FAIL", f"exit {exit_code}"))
    extra = "; ".join(part for part in (why, detail) if part)
    text = Text(word, style=OUTCOME_STYLES[word])
    text.append(f"  {redact_text(str(report))}" + (f"  ({extra})" if extra else ""))
    return text


def print_outcome(exit_code: int, report: Path, detail: str = "", *, stderr: bool = False) -> None:
    """The outcome line, on stderr when stdout carries JSON."""
    (err if stderr else out).print(outcome_text(exit_code, report, detail), soft_wrap=True, highlight=False)


def print_component_failure(summary: dict[str, Any]) -> None:
    """Exit 4's message: what failed, and the last lines of its log."""
    failure = summary.get("component_failure")
    if not failure:
        return
    where = f" (log: {failure['log_path']})" if failure.get("log_path") else ""
    headline = f"{failure['component']} failed: {failure['reason']}{where}"
    err.print(f"[bold red]error:[/] {error_line(headline)}")
    for line in failure.get("log_tail") or ():
        err.print(f"  | {line}", markup=False, highlight=False)


def unwrap(text: str) -> str:
    """Help text as paragraphs, each one line: typer keeps the line breaks of every paragraph
    after the first, so a docstring wrapped by hand broke mid-sentence at any other width.
    rich wraps the lines at the terminal's width instead."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def help_text(text: str | None) -> str | None:
    """A help string as typer should show it: unwrapped, and `[gates]` shown as typed (typer reads
    help as rich markup, which ate it: "TOML with a  table")."""
    return None if text is None else escape(unwrap(text))


def _name_cell(cells: list[Any]) -> Text:
    """A row's flag names as one cell: `--fanout -f` over `--no-fanout` (a negative flag on its
    own line, so the column is as wide as the longest flag, not the two side by side)."""
    texts = [c if isinstance(c, Text) else Text(str(c)) for c in cells]
    half = len(texts) // 2  # long, short | negative long, negative short (a required mark first)
    lines = [texts[: len(texts) - 2 * half + half], texts[len(texts) - half :]]
    out = Text()
    for line in lines:
        parts = [t for t in line if t.plain.strip()]
        if not parts:
            continue
        if out.plain:
            out.append("\n")
        out.append_text(Text(" ").join(parts))
    return out


def whole_flag_names(table: Table) -> Table:
    """typer's options table with every flag name whole: typer lets rich shorten all of its
    columns alike when the help column needs room, so at 80 columns two options both read
    `--upstream-delay…`. Here the names (all columns but the last two: type and help) become one
    no_wrap column, negatives on their own line; only the type and the help give up width."""
    names, types, helps = table.columns[:-2], table.columns[-2], table.columns[-1]
    fixed = Table(
        highlight=table.highlight,
        show_header=False,
        expand=table.expand,
        box=table.box,
        padding=table.padding,
        pad_edge=table.pad_edge,
        show_lines=table.show_lines,
        leading=table.leading,
        border_style=table.border_style,
        row_styles=table.row_styles,
    )
    fixed.add_column(no_wrap=True)
    fixed.add_column(overflow="fold")
    fixed.add_column(overflow="fold")
    for row in range(table.row_count):
        help_cell = helps._cells[row]
        for item in getattr(help_cell, "renderables", [help_cell]):
            if isinstance(item, Text):
                item.overflow = "fold"  # a word wider than the column (a mode name) folds, whole
        fixed.add_row(_name_cell([c._cells[row] for c in names]), types._cells[row], help_cell)
    return fixed


class _WholeFlagNames(Console):
    """typer's help console, with `whole_flag_names` applied to its options tables."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        for obj in objects:
            table = getattr(obj, "renderable", None)
            if isinstance(obj, Panel) and isinstance(table, Table) and len(table.columns) >= 4:
                obj.renderable = whole_flag_names(table)
        super().print(*objects, **kwargs)


@contextmanager
def _whole_flag_names() -> Iterator[None]:
    original = typer_rich._get_rich_console

    def console(stderr: bool = False) -> Console:
        made = original(stderr)
        made.__class__ = _WholeFlagNames
        return made

    typer_rich._get_rich_console = console
    try:
        yield
    finally:
        typer_rich._get_rich_console = original


class CheckedCommand(TyperCommand):
    """A command whose number options are finite (click's ranges let `inf` and `nan` through:
    `nan < 1` is false), whose --gateway/--collector are usable URLs and whose --output can hold
    a run folder, all checked before any work starts. Its help is unwrapped and escaped
    (`help_text`), and its options table keeps flag names whole at any width."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = help_text(self.help)
        for param in self.params:
            text = getattr(param, "help", None)  # options and typer's arguments have help
            if isinstance(text, str):
                setattr(param, "help", help_text(text))  # noqa: B010

    def format_help(self, ctx: click_core.Context, formatter: Any) -> None:
        with _whole_flag_names():
            super().format_help(ctx, formatter)

    def invoke(self, ctx: click_core.Context) -> Any:
        for param in self.params:
            values = ctx.params.get(param.name or "")
            for value in values if isinstance(values, (list, tuple)) else [values]:
                problem = value_problem(param.name or "", value)
                if problem:
                    raise click_errors.BadParameter(problem, ctx, cast(Any, param))
        return super().invoke(ctx)


def value_problem(name: str, value: object) -> str | None:
    """What is wrong with one option value, checked for every command alike."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if name in ("gateway", "collector") and isinstance(value, str) and value:
        problem = http_url_problem(value)
        return f"{problem}: {value}" if problem else None
    if name == "output" and isinstance(value, Path):
        problem = output_dir_problem(value)
        return f"{value} {problem}" if problem else None
    return None
