"""`zoo tui`: the terminal browser of the catalog, added to the `zoo` CLI through the tui
package's plugin (the Textual app loads only when the command runs)."""
from __future__ import annotations

import typer

from zoo.command_kit import catalog


app = typer.Typer()


def install(root: typer.Typer) -> None:
    root.add_typer(app)


@app.command("tui")
def tui_command() -> None:
    """Browse the catalog in a terminal UI: filter, sort, details, tensors, lineage, runs;
    tag, compare, verify, export and push models (press ? inside for the keys).

    Example: zoo --catalog ./my-zoo.db tui"""
    from .app import ZooApp

    ZooApp(catalog()).run()
