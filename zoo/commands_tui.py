"""`zoo tui`: the terminal browser of the catalog (the Textual app in the `tui` package)."""
from __future__ import annotations

from .cli import app, catalog


@app.command("tui")
def tui_command() -> None:
    """Browse the catalog in a terminal UI: filter, sort, details, tensors, lineage, runs;
    tag, compare, verify, export and push models (press ? inside for the keys)."""
    from tui.app import ZooApp  # the front end loads only when asked for

    ZooApp(catalog()).run()
