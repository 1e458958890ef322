"""The keys, screen by screen, and the filter syntax."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self._sections = sections

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for i, (title, rows) in enumerate(self._sections):
            if i:
                table.add_row("", "")
            table.add_row(Text(title, style="bold underline"), "")
            for key, text in rows:
                table.add_row(key, text)
        with VerticalScroll(id="help-box"):
            yield Static(Text("weightzoo: keys", style="bold"), id="help-title")
            yield Static(table, id="help-body")
            yield Static(Text("escape: close", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
