"""The Markdown documents loadgen writes (calibration.md, capacity.md) shown on a terminal (pure):
headings in bold, tables as `FitTable`s that fit the console, paragraphs and list items as text.
Only the subset loadgen writes is understood; everything is plain text to rich (no markup)."""

from __future__ import annotations

import re

from rich.console import RenderableType
from rich.text import Text

from loadgen.report.fit import Cell, Col, FitTable

_PIPE = re.compile(r"(?<!\\)\|")
_ESCAPED = re.compile(r"\\(.)")
_NUMBER = re.compile(r"^[-+±]?[\d,]*\.?\d+(?:e[-+]?\d+)?\s?%?$|^[-–]$")
_SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def inline(text: str) -> str:
    """Markdown inline text as read: emphasis markers and code backticks dropped, escapes undone."""
    text = text.replace("**", "").replace("`", "")
    return _ESCAPED.sub(r"\1", text).replace("&amp;", "&")


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [inline(c.strip()) for c in _PIPE.split(inner)]


def markdown_table(lines: list[str]) -> FitTable:
    """A Markdown table (header, separator, rows) as a table that fits the terminal: the first
    column names the row (repeated in a continuation table); on a narrow terminal the rightmost
    columns leave first; columns whose cells are all numbers are right-aligned and never cut."""
    header = _cells(lines[0])
    body = [_cells(line) for line in lines[2:] if not _SEPARATOR.match(line)]
    width = len(header)
    rows: list[list[Cell]] = [list((row + [""] * width)[:width]) for row in body]
    cols = []
    for i, name in enumerate(header):
        numeric = bool(rows) and all(_NUMBER.match(str(r[i])) for r in rows)
        cols.append(Col(name, numeric=numeric, key=i == 0, priority=0 if i < 2 else i))
    return FitTable(cols, rows, show_header=any(header))


def markdown_renderables(markdown: str) -> list[RenderableType]:
    """What to print, block by block, for a Markdown document of loadgen's."""
    lines = markdown.splitlines()
    out: list[RenderableType] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|") and i + 1 < len(lines) and _SEPARATOR.match(lines[i + 1]):
            end = i + 2
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            out.append(markdown_table(lines[i:end]))
            i = end
            continue
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(Text(inline(line[level:].strip()), style="bold underline" if level == 1 else "bold"))
        elif line.startswith(("- ", "* ")):
            out.append(Text("• " + inline(line[2:])))
        elif line.strip() or (out and not (isinstance(out[-1], Text) and not out[-1].plain)):
            out.append(Text(inline(line)))
        i += 1
    while out and isinstance(out[-1], Text) and not out[-1].plain:
        out.pop()
    return out
