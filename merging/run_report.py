"""What the merging commands print for a run: its `--json` row, or that it was reused."""
from __future__ import annotations

from typing import Any

from zoo.console import out, print_json


def reported(cat: Any, result: Any, as_json: bool, same: str) -> bool:
    """Print the `--json` row, or the 'reused' line naming `same` (e.g. "merge of the same
    inputs"); True when neither applied and the command prints its own summary."""
    e = result.entry
    if as_json:
        print_json({**cat.show(e), "reused": result.reused, "seconds": result.seconds})
        return True
    if result.reused:
        out.print(f"reused {e.ref}: the same {same} was already recorded (--no-cache to redo)")
        return True
    return False
