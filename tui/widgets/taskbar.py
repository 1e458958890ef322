"""A one-line progress bar for the long action in flight (verify, export, push)."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class TaskBar(Horizontal):
    def compose(self) -> ComposeResult:
        yield Label("", id="task-label")
        yield ProgressBar(id="task-progress", show_eta=False)

    def start(self, label: str, total: int | None) -> None:
        self.query_one("#task-label", Label).update(label)
        self.query_one("#task-progress", ProgressBar).update(total=total, progress=0)
        self.add_class("-busy")

    def set_progress(self, done: float) -> None:
        self.query_one("#task-progress", ProgressBar).update(progress=done)

    def stop(self) -> None:
        self.remove_class("-busy")
