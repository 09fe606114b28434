"""The terminal side every command shares: the two consoles, one-line errors, the spinner, and
the option checks made before any command starts work."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import typer
from rich.console import Console
from rich.markup import escape
from typer._click import core as click_core  # typer >= 0.25 vendors click
from typer._click import exceptions as click_errors
from typer.core import TyperCommand

from loadgen.exitcodes import EXIT_ERROR
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


class CheckedCommand(TyperCommand):
    """A command whose number options are finite (click's ranges let `inf` and `nan` through:
    `nan < 1` is false), whose --gateway/--collector are usable URLs and whose --output can hold
    a run folder, all checked before any work starts."""

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
