"""Screenshots of the TUI at 80x24 and 160x45 on the deterministic test catalog, compared with
the SVGs in __snapshots__/ (pytest-textual-snapshot). After an intended change to what the
TUI draws, rewrite them with `python -m pytest tests/tui/test_snapshots.py --snapshot-update`
and look at them (the failing run's report, snapshot_report.html, shows both) before
committing."""
from __future__ import annotations

import pytest

from tests.helpers.tui_async import settle

pytest.importorskip("pytest_textual_snapshot")
pytestmark = pytest.mark.slow  # each starts the app

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 45), id="160x45")]


def keys(*presses: str):
    """A `run_before` for snap_compare: press keys, then wait for workers and the footer."""
    async def run(pilot) -> None:
        await settle(pilot.app, pilot)
        for key in presses:
            await pilot.press(key)
            await settle(pilot.app, pilot)
    return run


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare, tui_app, size):
    """The catalog, the table focused (heavy border, ▶), the details of the first model."""
    assert snap_compare(tui_app, terminal_size=size, run_before=keys())


@pytest.mark.parametrize("size", SIZES)
def test_lineage_dag(snap_compare, tui_app, size):
    """merged@1 selected, the lineage pane focused: the diamond drawn once per model."""
    assert snap_compare(tui_app, terminal_size=size, run_before=keys("down", "down", "down", "down", "l", "tab"))


@pytest.mark.parametrize("size", SIZES)
def test_filter_one_match(snap_compare, tui_app, size):
    """A filter leaving one row: the table shrinks, the pane below gets the space."""
    assert snap_compare(tui_app, terminal_size=size,
                        run_before=keys("slash", *"grand", "enter", "l"))


def test_tensors_80x24(snap_compare, tui_app):
    """The tensors pane with its norms (computed in a worker) at 80x24."""
    assert snap_compare(tui_app, terminal_size=(80, 24), run_before=keys("w"))


def test_help_80x24(snap_compare, tui_app):
    """The help screen fits 80 columns."""
    assert snap_compare(tui_app, terminal_size=(80, 24), run_before=keys("question_mark"))
