"""Compare two models tensor by tensor, like `zoo diff A B`: ||B-A|| / ||A|| and max |B-A|."""
from __future__ import annotations

import threading

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, ProgressBar

from zoo.errors import ZooError

from ..data import ZooData


class CompareScreen(Screen):
    BINDINGS = [Binding("escape,q", "close", "Back")]

    def __init__(self, data: ZooData, a: int, b: int) -> None:
        super().__init__()
        self.data, self.a, self.b = data, a, b
        self.ref_a, self.ref_b = data.by_id[a].ref, data.by_id[b].ref
        self.rows: list[dict] | None = None
        self._done = 0
        self._lock = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Label(Text.assemble(("A ", "dim"), (self.ref_a, "bold"), ("  →  B ", "dim"), (self.ref_b, "bold"),
                                  ("   per-tensor relative change ‖B−A‖/‖A‖, most changed first", "dim")),
                    id="compare-title")
        yield ProgressBar(id="compare-progress", show_eta=False)
        table = DataTable(cursor_type="row", zebra_stripes=True, id="compare-table")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#compare-table", DataTable)
        for key, label in (("name", "tensor"), ("rel_change", "rel change"), ("max_abs", "max |Δ|"), ("note", "note")):
            table.add_column(Text(label, style="bold"), key=key)
        try:
            total = self.data.tensor_count(self.a)
        except ZooError as e:
            self._finish(None, str(e))
            return
        self.query_one("#compare-progress", ProgressBar).update(total=total, progress=0)
        self._timer = self.set_interval(0.1, self._tick)
        self._compare()

    def _advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n

    def _tick(self) -> None:
        self.query_one("#compare-progress", ProgressBar).update(progress=self._done)

    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _compare(self) -> None:
        try:
            rows, error = self.data.compare(self.a, self.b, progress=self._advance), None
        except ZooError as e:
            rows, error = None, str(e)
        except Exception as e:  # noqa: BLE001 - shown, not raised
            rows, error = None, f"{type(e).__name__}: {e}"
        self.app.call_from_thread(self._finish, rows, error)

    def _finish(self, rows: list[dict] | None, error: str | None) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.stop()
        self.query_one("#compare-progress", ProgressBar).display = False
        if error:
            self.query_one("#compare-title", Label).update(Text(f"cannot compare: {error}", style="bold red"))
            self.notify(error, title="compare", severity="error")
            return
        self.rows = rows or []
        table = self.query_one("#compare-table", DataTable)
        for r in self.rows:
            table.add_row(r["name"], Text(r["rel_change"], justify="right"), Text(r["max_abs"], justify="right"),
                          r["note"], key=r["name"])
        table.focus()
        self.notify(f"compared {len(self.rows)} tensors", title="compare")

    def action_close(self) -> None:
        self.app.pop_screen()
