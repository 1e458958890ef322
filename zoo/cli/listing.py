"""The `zoo ls` table: which columns exist, how each cell is written, which are shown.

A terminal gets the columns that fit a glance (the location when there is room); a pipe
gets every default column with whole values (all tags, all metrics at full precision, the
location), for `cut`, `awk` and spreadsheets. `--columns` chooses either way."""
from __future__ import annotations

from typing import Callable

from ..command_kit import fmt_metric
from ..console import human_bytes, human_count, out
from ..errors import ZooError, did_you_mean
from ..tables import Column, print_table

Cell = Callable[[dict, bool], str]  # (row, whole values?) -> text


def _metrics(row: dict, whole: bool) -> str:
    items = list(row["metrics"].items())
    if whole:
        return ", ".join(f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in items)
    return ", ".join(f"{k}={fmt_metric(v)}" for k, v in items[:2]) + (", …" if len(items) > 2 else "")


COLUMNS: dict[str, tuple[Column, Cell]] = {
    "ref": (Column("ref", min_width=20), lambda r, _: r["ref"]),
    "id": (Column("id", fixed=True, justify="right"), lambda r, _: str(r["id"])),
    "name": (Column("name", min_width=12), lambda r, _: r["name"]),
    "version": (Column("version", fixed=True, justify="right"), lambda r, _: str(r["version"])),
    "family": (Column("family"), lambda r, _: r["family"] or "-"),
    "architecture": (Column("architecture"), lambda r, _: r["architecture"] or "-"),
    "params": (Column("params", fixed=True, justify="right"), lambda r, _: human_count(r["params"])),
    "dtype": (Column("dtype", fixed=True), lambda r, _: r["dtype"] or "-"),
    "size": (Column("size", fixed=True, justify="right"), lambda r, _: human_bytes(r["bytes"])),
    "tags": (Column("tags"), lambda r, _: ",".join(r["tags"])),
    "metrics": (Column("metrics", min_width=10), _metrics),
    "location": (Column("location", min_width=12), lambda r, _: r["location"] or "-"),
    "created": (Column("created", fixed=True), lambda r, _: str(r["created"] or "-")),
}
DEFAULT = ("ref", "id", "family", "params", "dtype", "size", "tags", "metrics")
WIDE = 140  # a terminal at least this wide also shows the location by default


def chosen_columns(text: str | None) -> list[str] | None:
    """`--columns id,name,size` as a list; None when not given. An unknown name is one line
    that lists the valid ones."""
    if text is None:
        return None
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise ZooError(f"--columns {text!r} names no column; give some of: {', '.join(COLUMNS)}")
    for n in names:
        if n not in COLUMNS:
            raise ZooError(f"--columns: unknown column {n!r}{did_you_mean(n, list(COLUMNS))}; "
                           f"valid: {', '.join(COLUMNS)}")
    return names


def print_listing(rows: list[dict], columns: list[str] | None) -> None:
    """The listing as a table (see the module's docstring for which columns)."""
    whole = not out.is_terminal
    if columns is None:
        columns = [*DEFAULT, "location"] if whole or out.width >= WIDE else list(DEFAULT)
    print_table([COLUMNS[c][0] for c in columns], [[COLUMNS[c][1](r, whole) for c in columns] for r in rows])
