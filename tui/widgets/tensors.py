"""The tensors pane: a search box and a table of name, shape, dtype, params, norm."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Label

from ..data import TensorRow


def _norm(r: TensorRow) -> Text:
    return Text("…" if r.norm is None else f"{r.norm:.4g}", justify="right")


class TensorsView(Vertical):
    """Shows tensor rows; the screen filters them on the search box's input."""

    def compose(self) -> ComposeResult:
        yield Input(placeholder="search tensors by name", id="tensor-search", compact=True)
        yield Label("", id="tensor-summary")
        table = DataTable(cursor_type="row", zebra_stripes=True, id="tensor-table")
        yield table

    def on_mount(self) -> None:
        table = self.query_one("#tensor-table", DataTable)
        for key, label, width in (("name", "name", None), ("shape", "shape", 14), ("dtype", "dtype", 9),
                                  ("params", "params", 10), ("norm", "norm", 10)):
            table.add_column(Text(label, style="bold"), key=key, width=width)

    def show(self, rows: Sequence[TensorRow], total: int | None = None, message: str = "") -> None:
        table = self.query_one("#tensor-table", DataTable)
        table.clear()
        summary = self.query_one("#tensor-summary", Label)
        if message:
            summary.update(Text(message, style="dim"))
            return
        for r in rows:
            table.add_row(r.name, "x".join(map(str, r.shape)) or "scalar", r.dtype,
                          Text(f"{r.params:,}", justify="right"), _norm(r), key=r.name)
        shown = f"{len(rows)} of {total} tensors" if total is not None and total != len(rows) else f"{len(rows)} tensors"
        summary.update(f"{shown}, {sum(r.params for r in rows):,} parameters")

    def update_norms(self, rows: Iterable[TensorRow]) -> None:
        table = self.query_one("#tensor-table", DataTable)
        for r in rows:
            if r.name in table.rows:
                table.update_cell(r.name, "norm", _norm(r))
