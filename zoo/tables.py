"""Every table the CLI prints, drawn one way so it survives pipes and narrow terminals.

On a terminal the table fits the width: short columns (ids, sizes, counts) keep their full
width, the others share what is left and a cut cell ends with "…" (never a silent cut).
Piped or redirected, the same table is tab-separated text, one row per line under a header,
every value whole (tabs, newlines and backslashes inside a value escaped as \\t, \\n, \\\\),
so `zoo ls | cut -f1` and `awk -F'\\t'` work. Cells are plain text, never Rich markup.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from rich.console import Console

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_ON_ONE_LINE = str.maketrans({"\t": "\\t", "\n": "\\n", "\r": "\\r"})  # a terminal row stays one line
_GAP = 2  # spaces between two columns on a terminal


@dataclass(frozen=True)
class Column:
    """One column. `fixed`: short values that are never cut (ids, sizes); `wrap`: long text
    that wraps onto more lines instead of being cut (a `zoo show` value); `min_width`: what a
    shrinking column keeps at least (the ref of `zoo ls` stays readable)."""

    name: str
    fixed: bool = False
    wrap: bool = False
    justify: Literal["left", "right"] = "left"
    min_width: int = 6
    style: str | None = None


def tsv_cell(value: object) -> str:
    """A value as one TSV field: whole, with tabs, newlines and backslashes escaped."""
    return str(value).translate(_ESCAPES)


def print_table(columns: Sequence[Column | str], rows: Sequence[Sequence[object]], *,
                console: Console | None = None, header: bool = True) -> None:
    """Print `rows` (cells as plain values) under `columns`: fitted to a terminal, or TSV
    when stdout is not one. `header=False` hides the header on a terminal only (a key/value
    grid); TSV always starts with one."""
    from .console import out

    console = console or out
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells = [[str(v) for v in row] for row in rows]
    if not console.is_terminal:
        _print_tsv(console, cols, cells)
        return
    from rich.segment import Segments

    table, width = _fitted(console, cols, cells, header)  # rendered at its own width: uncut columns stay whole
    console.print(Segments(console.render(table, console.options.update_width(width))), crop=False)


def _print_tsv(console: Console, cols: Sequence[Column], cells: list[list[str]]) -> None:
    lines = ["\t".join(tsv_cell(c.name) for c in cols), *("\t".join(tsv_cell(v) for v in row) for row in cells)]
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def _fitted(console: Console, cols: Sequence[Column], cells: list[list[str]], header: bool):
    """A Rich table whose column widths add up to the console's width (or less, or more only
    when the uncut columns alone need more), and that width."""
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    cells = [[v.translate(_ON_ONE_LINE) for v in row] for row in cells]
    natural = [max([cell_len(c.name) if header else 0, *(cell_len(row[i]) for row in cells)], default=0) or 1
               for i, c in enumerate(cols)]
    widths = fit_widths(cols, natural, console.width - _GAP * (len(cols) - 1))
    table = Table(box=None, header_style="bold", show_header=header, padding=(0, _GAP // 2), pad_edge=False,
                  collapse_padding=False)
    for c, width in zip(cols, widths):
        table.add_column(c.name, width=width, justify=c.justify, style=c.style, no_wrap=not c.wrap,
                         overflow="fold" if c.wrap else "ellipsis")
    for row in cells:
        table.add_row(*(Text(v) for v in row))
    return table, max(console.width, sum(widths) + _GAP * (len(cols) - 1))


def fit_widths(cols: Sequence[Column], natural: Sequence[int], room: int) -> list[int]:
    """Column widths that fit `room`: fixed columns keep their natural width; the others get
    their minimum (or less, if that is all they need), then the rest is shared out, the
    narrowest first, so only the widest columns are cut."""
    widths = list(natural)
    flexible = [i for i, c in enumerate(cols) if not c.fixed]
    left = room - sum(natural[i] for i, c in enumerate(cols) if c.fixed)
    if sum(natural[i] for i in flexible) <= left:
        return widths
    floors = {i: min(natural[i], cols[i].min_width) for i in flexible}
    while sum(floors.values()) > max(left, len(flexible)):  # too narrow even for the minimums: cut the widest
        widest = max(floors, key=floors.get)
        floors[widest] -= 1
    left -= sum(floors.values())
    pending = sorted(flexible, key=lambda i: natural[i] - floors[i])
    for n, i in enumerate(pending):
        share = max(0, left) // (len(pending) - n)
        extra = min(natural[i] - floors[i], share)
        widths[i] = max(1, floors[i] + extra)
        left -= extra
    return widths
