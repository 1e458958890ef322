"""Assertions for the promise every user mistake keeps: one line on stderr starting with
`error:`, a non-zero exit, no traceback, and nothing recorded in the catalog."""
from __future__ import annotations

import json
from pathlib import Path


def one_line_error(code: int, err: str, *needles: str) -> str:
    """Assert a one-line refusal containing every needle; return the line."""
    assert code != 0, f"must exit non-zero: {err}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("error:"), line
    assert "internal error" not in line and "Traceback" not in err, line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def nothing_registered(run, store: Path | None = None) -> None:
    """The catalog lists no model, and no folder is visible in the store."""
    code, out, err = run("ls", "--json")
    assert code == 0 and json.loads(out) == [], (out, err)
    if store is not None and store.exists():
        assert [p.name for p in store.iterdir() if not p.name.startswith(".")] == []
