"""Tables that fit the terminal they are printed on (pure rendering, no I/O).

A `FitTable` is measured when rich prints it, at the console's width: number cells are never cut
or folded, words of text cells are kept whole down to a floor (longer words fold), and when even
that does not fit, the columns with the highest `priority` leave the table, in that order. Left
columns go to a continuation table under the first one (with the `key` columns repeated), so
nothing is lost; only when the key columns and one more column cannot fit together is a column
dropped, and the caption names it. Every cell and the title are plain text: nothing in them is
read as rich markup, so a mode or run id like `[eu]` shows as typed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

Cell = str | Text


@dataclass(frozen=True)
class Col:
    """One column: `numeric` cells are right-aligned and never wrapped or cut (the header may
    wrap at its spaces); text wraps at
    spaces, and a word longer than `floor` cells may fold. `priority` 0 is always in the first
    table; higher leaves first when the table is too wide, columns of one priority together. `key` columns name the row and are
    repeated in a continuation table."""

    header: str
    numeric: bool = False
    priority: int = 0
    key: bool = False
    floor: int = 20


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(str(cell))


def _words(cell: Cell) -> list[int]:
    return [cell_len(w) for w in _text(cell).plain.split()] or [0]


def _needed(col: Col, cells: Sequence[Cell]) -> int:
    """The narrowest the column may be: a number's full width; text's longest word up to the floor."""
    longest_header = max(_words(col.header))
    if col.numeric:
        return max([longest_header, *(cell_len(_text(c).plain) for c in cells)])
    longest = max([longest_header, *(max(_words(c)) for c in cells)])
    return max(1, min(longest, col.floor))


def _natural(col: Col, cells: Sequence[Cell]) -> int:
    return max(
        max((cell_len(line) for line in _text(c).plain.splitlines()), default=0) for c in [col.header, *cells]
    )


def table_overhead(columns: int) -> int:
    """Cells a rich Table with the default box and padding adds to its columns' content."""
    return 3 * columns + 1


def widths_for(cols: Sequence[Col], columns: Sequence[Sequence[Cell]], width: int) -> list[int] | None:
    """Content widths that fit `width` (numbers whole, text words whole down to the floor), or
    None when the columns cannot fit. Text columns give up width widest first."""
    need = [_needed(c, cells) for c, cells in zip(cols, columns, strict=True)]
    widths = [max(n, _natural(c, cells)) for n, c, cells in zip(need, cols, columns, strict=True)]
    room = width - table_overhead(len(cols))
    if sum(need) > room:
        return None
    while sum(widths) > room:
        excess = sum(widths) - room
        shrinkable = [i for i, c in enumerate(cols) if not c.numeric and widths[i] > need[i]]
        widest = max(widths[i] for i in shrinkable)
        tops = [i for i in shrinkable if widths[i] == widest]
        second = max([widths[i] for i in shrinkable if widths[i] < widest] + [max(need[i] for i in tops)])
        step = max(1, min(widest - second, -(-excess // len(tops))))
        for i in tops:
            widths[i] = max(need[i], widths[i] - step)
    return widths


@dataclass
class FitTable:
    """A table laid out at print time for the console's width (see the module docstring)."""

    cols: Sequence[Col]
    rows: Sequence[Sequence[Cell]]
    title: str = ""
    caption: str = ""
    row_styles: Sequence[str | None] = ()
    show_header: bool = True

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.tables(options.max_width)

    def tables(self, width: int) -> Iterator[Table | Text]:
        """The first table and its continuations at `width` cells, then a line naming any
        column that could not be shown at all."""
        shown, rest = self._split(list(range(len(self.cols))), width)
        parts, dropped = [shown], []
        keys = [i for i in shown if self.cols[i].key]
        while rest:
            part, left = self._split(keys + rest, width)
            if part == keys:  # not even one more column fits beside the keys
                dropped = rest
                break
            parts.append(part)
            rest = left
        for n, part in enumerate(parts):
            title = (
                self.title if n == 0 else (f"{self.title.split(' (')[0]} (continued)" if self.title else "")
            )
            yield self._table(part, width, title, self.caption if n == len(parts) - 1 else "")
        if dropped:
            yield Text(self._dropped_caption(dropped), style="dim")

    def _dropped_caption(self, dropped: list[int]) -> str:
        names = ", ".join(self.cols[i].header for i in dropped)
        return f"not shown at this width: {names} (widen the terminal, or see report.md)"

    def _column_cells(self, i: int) -> list[Cell]:
        return [row[i] for row in self.rows]

    def _split(self, order: list[int], width: int) -> tuple[list[int], list[int]]:
        """(columns that fit together, columns that leave), leaving by priority, highest first."""
        shown = list(order)
        left: list[int] = []
        while widths_for(*self._subset(shown), width) is None:
            movable = [i for i in shown if self.cols[i].priority > 0 and not self.cols[i].key]
            if not movable:
                break
            top = max(self.cols[i].priority for i in movable)
            for victim in [i for i in movable if self.cols[i].priority == top]:  # a priority leaves together
                shown.remove(victim)
                left.append(victim)
        return shown, sorted(left)

    def _subset(self, idx: Sequence[int]) -> tuple[list[Col], list[list[Cell]]]:
        return [self.cols[i] for i in idx], [self._column_cells(i) for i in idx]

    def _table(self, idx: list[int], width: int, title: str, caption: str) -> Table:
        cols, cells = self._subset(idx)
        widths = widths_for(cols, cells, width)
        table = Table(
            title=Text(title) if title else None,
            title_justify="left",
            caption=Text(caption) if caption else None,
            show_header=self.show_header,
        )
        for n, col in enumerate(cols):
            fixed = widths[n] if widths is not None else None
            table.add_column(
                _text(col.header),
                justify="right" if col.numeric else "left",
                # The widths above keep every number whole (a number has no space to wrap at),
                # and at worst (too narrow a terminal) a value folds: it is never elided.
                overflow="fold",
                width=fixed,
            )
        for r, row in enumerate(self.rows):
            style = self.row_styles[r] if r < len(self.row_styles) else None
            table.add_row(*(_text(row[i]) for i in idx), style=style)
        return table
