"""The TUI at 80x24: the footer keys that matter are on screen, panes size to their content,
Tab reaches the pane below the table in one press, the focused pane is marked by more than
colour, and the command palette offers every action. What is checked is the screen as
text (tests.helpers.tui_zoo.screen_lines), as a user without colour would see it.
"""
from __future__ import annotations

import pytest

from tests.helpers.tui_async import async_test, settle
from tests.helpers.tui_zoo import screen_lines

SMALL = (80, 24)

pytest.importorskip("textual")
pytestmark = pytest.mark.slow  # Textual apps driven by its test pilot


@async_test
async def test_footer_shows_help_quit_and_the_main_keys_at_80_columns(tui_app):
    app = tui_app
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        footer = screen_lines(app)[-1]
        for words in ("? Help", "q Quit", "/ Filter", "d w l panes", "^p palette"):
            assert words in footer, footer
        # while a text box has the keyboard, q types a q: the footer names ctrl+q instead
        await pilot.press("slash")
        await settle(app, pilot)
        footer = screen_lines(app)[-1]
        assert "^q Quit" in footer and "Help" in footer, footer


@async_test
async def test_filter_placeholder_fits(tui_app):
    app = tui_app
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        box = app.main.query_one("#filter")
        assert len(box.placeholder) <= box.content_region.width
        assert box.placeholder in "\n".join(screen_lines(app))


@async_test
async def test_a_filter_leaving_one_row_gives_the_space_to_the_pane(tui_app):
    app = tui_app
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        main = app.main
        table, panes = main.table, main.query_one("#panes")
        full_table, full_panes = table.outer_size.height, panes.outer_size.height
        await pilot.press("slash", *"merged", "enter")
        await settle(app, pilot)
        assert table.row_count == 1
        assert table.outer_size.height == full_table - 5  # 6 rows -> 1
        assert panes.outer_size.height == full_panes + 5
        assert sum(w.outer_size.height for w in main.children if w.display) == SMALL[1]


@async_test
async def test_one_tab_from_the_table_reaches_the_lineage_view(tui_app):
    from tui.widgets.lineage import LineageView

    app = tui_app
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        main = app.main
        assert main.focused is main.table
        await pilot.press("l")
        await settle(app, pilot)
        assert main.focused is main.table  # showing a pane does not take the keyboard
        await pilot.press("tab")
        assert isinstance(main.focused, LineageView)
        await pilot.press("shift+tab")
        assert main.focused is main.table
        await pilot.press("shift+tab")
        assert main.focused.id == "filter"


@async_test
async def test_the_focused_pane_is_marked_without_colour(tui_app):
    app = tui_app
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        main = app.main
        lines = screen_lines(app)

        def top_border(widget) -> str:
            return screen_lines(app)[widget.region.y]

        table, panes, box = main.table, main.query_one("#panes"), main.query_one("#filter")
        assert top_border(table).startswith("┏━ ▶ catalog ")  # heavy border and the mark
        assert top_border(panes).startswith("╭─ ■ Details d")  # rounded, no mark
        assert top_border(box).startswith("╭─ filter")
        assert sum(line.count("▶") for line in lines) == 1
        await pilot.press("l", "tab")
        await settle(app, pilot)
        assert top_border(panes).startswith("┏━ ▶ □ Details d  □ Tensors w  ■ Lineage l ")
        assert top_border(table).startswith("╭─ catalog ")
        await pilot.press("slash")
        await settle(app, pilot)
        assert top_border(box).startswith("┏━ ▶ filter")
        assert sum(line.count("▶") for line in screen_lines(app)) == 1


# every action the app has a key for, with the title a user would search the palette by
ACTIONS = {
    "focus_filter": "Filter the catalog", "tab('details')": "Details pane", "tab('tensors')": "Tensors pane",
    "tab('lineage')": "Lineage pane", "sort_next": "Sort by the next column",
    "sort_reverse": "Reverse the sort order", "tag": "Tag model", "mark": "Mark model for compare",
    "compare": "Compare with marked", "verify": "Verify model", "export": "Export model",
    "push": "Push model to the Hub", "reload": "Reload catalog", "help": "Help", "runs": "Runs",
}


@async_test
async def test_the_palette_finds_every_action(tui_app):
    from textual.command import CommandPalette
    from textual.widgets import OptionList

    from tui.app import ZooApp
    from tui.screens.main import MainScreen

    app = tui_app
    bound = {b.action for b in MainScreen.BINDINGS + ZooApp.BINDINGS} - {"leave_filter", "quit", "help_quit"}
    assert bound == set(ACTIONS), "a binding without a palette title in this test"
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        offered = {c.callback.args[0] for c in app.get_system_commands(app.main)
                   if getattr(c.callback, "args", None)}
        assert bound <= offered
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        for title in [*ACTIONS.values(), "Quit", "Sort by params", "Lineage: re-root"]:
            app.screen.query_one("#--input Input").value = title
            found: list[str] = []
            for _ in range(60):  # the palette searches in the background
                await pilot.pause(0.05)
                options = app.screen.query_one(OptionList)
                found = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
                if any(title in f for f in found):
                    break
            assert any(title in f for f in found), (title, found)
        # choosing one runs it
        app.screen.query_one("#--input Input").value = "Lineage pane"
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.screen is app.main and app.main.active_pane == "lineage"
