"""Recent operator runs (`zoo runs`): what ran, with which params, producing what."""
from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

from ..data import ZooData, clip


class RunsScreen(Screen[int | None]):
    """Enter on a run selects the model it made (dismisses with that model's id)."""

    BINDINGS = [Binding("escape,q", "close", "Back")]

    def __init__(self, data: ZooData, limit: int = 500) -> None:
        super().__init__()
        self.data, self.limit = data, limit
        self.runs: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Header(icon="◆")
        yield Label("", id="runs-title")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="runs-table")
        yield Footer()

    def on_mount(self) -> None:
        self.runs = self.data.runs(self.limit)
        table = self.query_one("#runs-table", DataTable)
        for key, label, width in (("id", "run", 5), ("operator", "operator", 16), ("inputs", "inputs", 30),
                                  ("outputs", "outputs", 24), ("seconds", "seconds", 8), ("started", "started", 20),
                                  ("params", "params", None)):
            table.add_column(Text(label, style="bold"), key=key, width=width)
        for r in self.runs:
            table.add_row(
                Text(str(r["id"]), justify="right"), r["operator"],
                clip(", ".join(f"{i.get('ref', '?')} ({i.get('role', '?')})" for i in r["inputs"]) or "-", 30),
                clip(", ".join(o.get("ref", "?") for o in r["outputs"]) or "-", 24),
                Text(f"{r['seconds']:.2f}" if r["seconds"] is not None else "-", justify="right"),
                r["started"] or "-", clip(json.dumps(r["params"]), 80), key=str(r["id"]))
        shown = f"{len(self.runs)} most recent runs" if len(self.runs) == self.limit else f"{len(self.runs)} runs"
        self.query_one("#runs-title", Label).update(
            Text.assemble((shown, "bold"), ("   enter: select the model a run made · escape: back", "dim")))
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        run = next((r for r in self.runs if str(r["id"]) == event.row_key.value), None)
        outputs = [o for o in (run or {}).get("outputs", []) if o.get("id") in self.data.by_id]
        if outputs:
            self.dismiss(outputs[0]["id"])
        else:
            self.notify("this run's output is no longer in the catalog", severity="warning")

    def action_close(self) -> None:
        self.dismiss(None)
