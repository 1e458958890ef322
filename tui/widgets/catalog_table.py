"""The catalog listing: one page of model rows at a time, handed over by the screen."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from ..data import COLUMNS, ModelRow

# fixed widths keep the columns still while filtering (None: fit the content)
_WIDTHS = {"name": None, "version": 3, "family": 8, "params": 7, "dtype": 8, "size": 9, "tags": 24,
           "metric": 18, "location": 36}
_RIGHT = {"version", "params", "size"}


class CatalogTable(DataTable):
    """Rows keyed by model id; header labels show the sort column and direction."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._sort: tuple[str, bool] | None = None

    def set_sort(self, key: str, reverse: bool) -> None:
        """(Re)label the columns for this sort order; clears the rows."""
        if self._sort == (key, reverse) and self.columns:
            return
        self._sort = (key, reverse)
        self.clear(columns=True)
        for col, header in COLUMNS:
            label = Text(header, style="bold")
            if col == key:
                label.append(" ▼" if reverse else " ▲", style="bold")
            self.add_column(label, width=_WIDTHS[col], key=col)

    def show(self, rows: Sequence[ModelRow], store: Path | None = None) -> None:
        """Replace the rows with `rows` (one page)."""
        self.clear()
        self.append(rows, store)

    def append(self, rows: Sequence[ModelRow], store: Path | None = None) -> None:
        # Text cells: no markup parsing (a '[' in a name or path stays literal)
        for r in rows:
            cells = r.cells(store)
            self.add_row(*(Text(c, justify="right" if col in _RIGHT else "left", no_wrap=True, overflow="ellipsis")
                           for (col, _), c in zip(COLUMNS, cells)), key=str(r.id))

    class NearEnd(Message):
        """Scrolled (or moved) to the last loaded rows: the screen may append a page."""

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self.row_count and new_value > old_value and new_value >= self.max_scroll_y - 2:
            self.post_message(self.NearEnd())

    def model_id_at(self, index: int) -> int | None:
        if not 0 <= index < self.row_count:
            return None
        return int(self.coordinate_to_cell_key((index, 0)).row_key.value)

    @property
    def selected_model_id(self) -> int | None:
        return self.model_id_at(self.cursor_row) if self.row_count else None

    def index_of(self, model_id: int) -> int | None:
        try:
            return self.get_row_index(str(model_id))
        except Exception:  # noqa: BLE001 - RowDoesNotExist
            return None
