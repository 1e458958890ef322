"""The Textual TUI (`zoo tui`): keys, filtering, selection, tensors, lineage navigation,
actions, help and runs, driven by Textual's Pilot on the deterministic catalog of
tests/helpers/tui_zoo.py (fixtures `tui_zoo`, `tui_app` in tests/conftest.py). Layout at
80x24, focus and the palette: test_layout.py; the lineage DAG: test_lineage_dag.py;
screenshots: test_snapshots.py.
"""
from __future__ import annotations

import sys
import types

import pytest

from tests.helpers.tui_async import async_test, settle

SIZE = (80, 24)

pytest.importorskip("textual")
pytestmark = pytest.mark.slow  # Textual apps driven by its test pilot


def plain(widget) -> str:
    """What a Static-like widget shows, as plain text."""
    import io

    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def shown_names(app) -> list[str]:
    table = app.main.table
    return [app.main.data.by_id[table.model_id_at(i)].name for i in range(table.row_count)]


# ----- the catalog table -----------------------------------------------------------------------

@async_test
async def test_main_screen_lists_and_selects(tui_app):
    app = tui_app
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        main = app.main
        assert shown_names(app) == ["base", "ft-a", "ft-b", "grand", "merged", "vit-small"]
        assert main.table.border_subtitle == "showing 6 of 6 models"
        assert main.selected_id == main.data.model_id("base")
        view = main.query_one("#details")
        assert view.info["ref"] == "base@1" and view.info["location_shown"] == "store:base/v1"
        await pilot.press("down", "down")
        assert main.data.by_id[main.selected_id].ref == "ft-b@1"
        assert view.info["ref"] == "ft-b@1"
        assert [p["parent"] for p in view.info["parents"]] == ["base@1"]
        assert len(view.info["files"]) == 2 and all(len(f["sha256"]) == 64 for f in view.info["files"])


@async_test
async def test_filter_as_you_type(tui_app):
    app = tui_app
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        main = app.main
        await pilot.press("slash")
        assert main.focused.id == "filter"
        await pilot.press(*"ft")
        assert shown_names(app) == ["ft-a", "ft-b", "grand"]  # name or tag
        await pilot.press("space", *"gr")
        assert shown_names(app) == ["grand"]
        assert main.data.by_id[main.selected_id].name == "grand"
        assert main.table.border_subtitle == "showing 1 of 1 matching · 6 models"
        await pilot.press("backspace", "backspace")
        assert shown_names(app) == ["ft-a", "ft-b", "grand"]
        box = main.query_one("#filter")
        box.value = "family:vit"
        await pilot.pause()
        assert shown_names(app) == ["vit-small"]
        box.value = "tag:merge"
        await pilot.pause()
        assert shown_names(app) == ["merged"]
        await pilot.press(*"zz")
        assert shown_names(app) == [] and main.selected_id is None
        assert "no model matches" in plain(main.query_one("#details-body"))
        await pilot.press("escape")
        assert main.focused is main.table


@async_test
async def test_sort_keys_and_header_click(tui_app):
    app = tui_app
    from rich.text import Text
    from textual.widgets import DataTable
    from textual.widgets.data_table import ColumnKey

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        main = app.main
        await pilot.press("down")  # ft-a stays selected through sorting
        await pilot.press("s")
        assert main.sort_key == "version"
        await pilot.press("s", "s", "s")  # family, params, dtype
        await pilot.press("s", "s")  # size, tags
        assert main.sort_key == "tags"
        assert shown_names(app)[0] == "base"  # "base,llama-base" sorts first
        await pilot.press("S")
        assert main.sort_reverse and shown_names(app)[0] == "vit-small"
        assert main.data.by_id[main.selected_id].name == "ft-a"
        table = main.table
        table.post_message(DataTable.HeaderSelected(table, ColumnKey("metric"), 7, Text("key metric")))
        await pilot.pause()
        assert (main.sort_key, main.sort_reverse) == ("metric", False)
        assert shown_names(app)[:3] == ["base", "ft-a", "merged"]  # acc 0.5, 0.625, 0.75; then none
        table.post_message(DataTable.HeaderSelected(table, ColumnKey("metric"), 7, Text("key metric")))
        await pilot.pause()
        assert main.sort_reverse and shown_names(app)[0] == "merged"


@async_test
async def test_rows_load_page_by_page(tui_app, monkeypatch):
    app = tui_app
    import tui.screens.main as main_module

    monkeypatch.setattr(main_module, "PAGE", 2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.main.table.row_count == 2
        assert app.main.table.border_subtitle == "showing 2 of 6 models"
        await pilot.press("down")  # onto the last loaded row: the next page comes
        assert app.main.table.row_count == 4
        await pilot.press("down", "down", "down")
        assert app.main.table.row_count == 6


# ----- details panes ------------------------------------------------------------------------------

@async_test
async def test_tensors_view_with_norms_and_search(tui_app):
    app = tui_app
    from textual.widgets import DataTable

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("w")
        await settle(app, pilot)
        main = app.main
        assert main.active_pane == "tensors"
        table = main.query_one("#tensor-table", DataTable)
        assert table.row_count == 12
        assert all(r.norm is not None and r.norm > 0 for r in main._tensor_rows)
        norm = str(table.get_cell("model.norm.weight", "norm"))
        assert norm != "…" and float(norm) > 0
        table.focus()
        main.query_one("#tensor-search").focus()
        await pilot.press(*"mlp")
        assert table.row_count == 3
        assert "3 of 12 tensors" in str(main.query_one("#tensor-summary").render())
        await pilot.press("escape")
        assert main.focused is table


# ----- actions ------------------------------------------------------------------------------------

@async_test
async def test_tag_action(tui_app):
    app = tui_app
    from tui.screens.prompt import PromptScreen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("down", "t")  # ft-a
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"prod  -ft", "enter")
        await pilot.pause()
        assert app.main.data.catalog.tags_of("ft-a") == ["prod"]
        assert app.main.data.by_id[app.main.selected_id].tags == ["prod"]
        assert app.main.query_one("#details").info["tags"] == ["prod"]
        assert ("ft-a@1: tags = prod", "information") in app.notes
        await pilot.press("t")
        app.screen.query_one("#prompt-input").value = "other"
        await pilot.press("escape")  # cancels
        assert app.main.data.catalog.tags_of("ft-a") == ["prod"]


@async_test
async def test_compare_marked_with_selected(tui_app):
    app = tui_app
    from tui.screens.compare import CompareScreen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("c")
        assert app.notes[-1][1] == "warning"  # nothing marked yet
        await pilot.press("m", "down", "c")  # base marked, ft-a selected
        assert isinstance(app.screen, CompareScreen)
        await settle(app, pilot)
        rows = app.screen.rows
        assert len(rows) == 12 and all(float(r["rel_change"]) > 0 for r in rows)
        rel = [float(r["rel_change"]) for r in rows]
        assert rel == sorted(rel, reverse=True)
        await pilot.press("escape")
        assert app.screen is app.main


@async_test
async def test_verify_and_export_run_in_workers(tui_app, tmp_path):
    app = tui_app
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("v")
        await settle(app, pilot)
        assert ("ok base@1", "information") in app.notes
        target = tmp_path / "exported"
        await pilot.press("e")
        box = app.screen.query_one("#prompt-input")
        assert box.value == "./base-v1"
        box.value = str(target)
        await pilot.press("enter")
        await settle(app, pilot)
        assert (target / "model.safetensors").is_file() and (target / "config.json").is_file()
        assert any(n.startswith("exported base@1 to") for n, _ in app.notes)
        await pilot.press("e")
        app.screen.query_one("#prompt-input").value = str(target)  # exists: one clear error
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.notes[-1][1] == "error"


@async_test
async def test_push_when_hub_is_missing_and_present(tui_app, monkeypatch):
    app = tui_app
    import tui.data

    real = tui.data.importlib.import_module

    def no_hub(name, *args):
        if name == "zoo.hub":
            raise ModuleNotFoundError("No module named 'zoo.hub'", name="zoo.hub")
        return real(name, *args)

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        monkeypatch.setattr(tui.data.importlib, "import_module", no_hub)
        await pilot.press("p")
        assert "not available yet" in app.notes[-1][0] and app.notes[-1][1] == "warning"
        monkeypatch.setattr(tui.data.importlib, "import_module", real)
        calls = []
        fake = types.ModuleType("zoo.hub")
        fake.push = lambda catalog, ref, repo_id: calls.append((ref, repo_id)) or f"https://hub/{repo_id}"
        monkeypatch.setitem(sys.modules, "zoo.hub", fake)
        await pilot.press("p", *"me/base", "enter")
        await settle(app, pilot)
        assert calls == [("base@1", "me/base")]
        assert app.notes[-1] == ("pushed base@1 to me/base: https://hub/me/base", "information")


# ----- other screens --------------------------------------------------------------------------------

@async_test
async def test_help_screen_lists_keys(tui_app):
    app = tui_app
    from tui.screens.help import HelpScreen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = plain(app.screen.query_one("#help-body"))
        for words in ("add tags", "compare the marked model", "re-hash", "new folder", "push the selected model",
                      "recent operator runs", "filter by name", "tag:prod", "ctrl+p", "ancestors and descendants",
                      "re-root on that model", "quit (ctrl+q too"):
            assert words in text
        assert text.count("quit (") == 1  # q and ctrl+q: one line
        await pilot.press("escape")
        assert app.screen is app.main


@async_test
async def test_runs_screen_selects_the_output(tui_app):
    app = tui_app
    from tui.screens.runs import RunsScreen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("r")
        assert isinstance(app.screen, RunsScreen)
        assert [r["operator"] for r in app.screen.runs] == ["zoo.train", "merge.linear"]  # newest first
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.screen is app.main
        assert app.main.data.by_id[app.main.selected_id].name == "merged"


def test_zoo_tui_command_opens_the_chosen_catalog(tui_zoo, monkeypatch, tmp_path):
    import tui.app
    from zoo.cli import main

    opened = []
    monkeypatch.setattr(tui.app.ZooApp, "run", lambda self: opened.append(self.data.catalog.url))
    monkeypatch.setenv("ZOO_STORE", str(tmp_path / "store"))
    assert main(["--catalog", str(tui_zoo / "catalog.db"), "tui"]) == 0
    assert opened == [f"sqlite:///{tui_zoo / 'catalog.db'}"]
