"""The lineage pane as a DAG on the test catalog's diamond (base -> ft-a, ft-b -> merged,
then grand): each model drawn once, the merge with its two parent edges, the shared base
with two child edges, run parameters wrapped rather than cut, enter re-roots."""
from __future__ import annotations

import pytest

from tests.helpers.tui_async import async_test, settle
from tests.helpers.tui_zoo import TRAIN_PARAMS, screen_lines

pytest.importorskip("textual")
pytestmark = pytest.mark.slow  # Textual apps driven by its test pilot


def pane_text(app) -> str:
    """The lineage pane's rows as plain text (inside its border and padding)."""
    view = app.main.query_one("#lineage").content_region
    lines = screen_lines(app)[view.y: view.bottom]
    return "\n".join(line[view.x: view.right].rstrip() for line in lines).rstrip()


async def open_lineage(app, pilot, name: str) -> None:
    await pilot.press("slash", *name, "enter", "l")
    await settle(app, pilot)


@async_test
async def test_diamond_each_ancestor_once_and_the_merge_has_two_parent_edges(tui_app):
    from tui.widgets.lineage import LineageView

    app = tui_app
    async with app.run_test(size=(160, 45)) as pilot:
        await open_lineage(app, pilot, "merged")
        view = app.main.query_one("#lineage", LineageView)
        refs = [r.node.ref for r in view.rows]
        assert sorted(refs) == ["base@1", "ft-a@1", "ft-b@1", "grand@1", "merged@1"]  # each once
        assert [(r.node.ref, r.generation) for r in view.rows] == [
            ("base@1", 0), ("ft-a@1", 1), ("ft-b@1", 1), ("merged@1", 2), ("grand@1", 3)]
        row = {r.node.ref: r for r in view.rows}
        assert [view.ref_of(e.parent) for e in row["merged@1"].parents] == ["ft-a@1", "ft-b@1"]
        assert [(e.role, e.weight) for e in row["merged@1"].parents] == [("input", 0.5), ("input", 0.5)]
        assert [view.ref_of(e.child) for e in row["base@1"].children] == ["ft-a@1", "ft-b@1"]
        assert row["merged@1"].is_focus and view.highlighted_model_id == row["merged@1"].node.id
        # on screen: one row per model, the shared base once with both edges out of it
        text = pane_text(app)
        assert text.count("○ base@1") == 1 and text.count("● merged@1") == 1
        assert "g0  ○ base@1  llama · 4.4K\n    → ft-a@1, ft-b@1" in text
        assert ("g2  ● merged@1  llama · 4.4K  (this model)\n"
                "    ← ft-a@1 (input w=0.5), ft-b@1 (input w=0.5)\n"
                "      run 1 merge.linear weights=[0.5,0.5]\n"
                "    → grand@1") in text


@async_test
async def test_long_run_params_wrap_at_80_columns(tui_app):
    app = tui_app
    async with app.run_test(size=(80, 24)) as pilot:
        await open_lineage(app, pilot, "grand")
        text = pane_text(app)
        flat = " ".join(line.strip() for line in text.splitlines())
        assert "run 2 zoo.train" in flat
        for k, v in TRAIN_PARAMS.items():  # every parameter is on screen, the last one too
            assert f"{k}={v}" in flat, (k, text)
        assert max(len(line) for line in text.splitlines()) <= 80 - 3  # border and padding


@async_test
async def test_enter_on_a_row_reroots_on_that_model(tui_app):
    from tui.widgets.lineage import LineageView

    app = tui_app
    async with app.run_test(size=(80, 24)) as pilot:
        await open_lineage(app, pilot, "merged")
        main = app.main
        await pilot.press("tab")
        view = main.query_one("#lineage", LineageView)
        assert main.focused is view
        view.highlighted = next(i for i, r in enumerate(view.rows) if r.node.ref == "ft-a@1")
        await pilot.press("enter")
        await settle(app, pilot)
        assert main.data.by_id[main.selected_id].ref == "ft-a@1"
        assert main.query_one("#filter").value == ""  # the filter hid it: cleared
        assert main.table.selected_model_id == main.selected_id
        assert main.query_one("#details").info["ref"] == "ft-a@1"
        # re-rooted: ft-a's ancestors and descendants (ft-b is neither), ft-a marked as the focus
        assert [r.node.ref for r in view.rows] == ["base@1", "ft-a@1", "merged@1", "grand@1"]
        assert [r.node.ref for r in view.rows if r.is_focus] == ["ft-a@1"]
        assert main.focused is view  # the keyboard stays in the pane


@async_test
async def test_a_model_without_lineage(tui_app):
    app = tui_app
    async with app.run_test(size=(80, 24)) as pilot:
        await open_lineage(app, pilot, "vit")
        text = pane_text(app)
        assert "● vit-small@1" in text and "no recorded parents or children" in text


@async_test
async def test_a_large_lineage_draws_the_models_nearest_the_selected_one(tui_app, monkeypatch):
    import tui.widgets.lineage as lineage_module

    monkeypatch.setattr(lineage_module, "MAX_ROWS", 3)
    app = tui_app
    async with app.run_test(size=(80, 24)) as pilot:
        await open_lineage(app, pilot, "merged")
        view = app.main.query_one("#lineage")
        # merged is generation 2; ft-a, ft-b and grand are one away, base two: the 3 kept are
        # merged and the two one away with the lowest ids (ft-a, ft-b), in generation order
        assert [r.node.ref for r in view.rows] == ["ft-a@1", "ft-b@1", "merged@1"]
        assert "… 2 more models, further from this one, not drawn" in pane_text(app).replace("\n", " ")
