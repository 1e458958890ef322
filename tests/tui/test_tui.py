"""The Textual TUI (`zoo tui`): keys, filtering, selection, tensors, lineage navigation,
actions, help, and SVG snapshots of the main screens.

Snapshots live in tests/snapshots/*.svg; after an intended change to what the TUI shows,
rewrite them with `ZOO_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_tui.py` and look at
them before committing. The test catalog is deterministic: fixed names and weights, files
copied into a store whose path is never shown, and fixed creation times.
"""
from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import sys
import types
from pathlib import Path

import pytest

SIZE = (160, 44)
SNAPSHOTS = Path(__file__).parent / "snapshots"
FIXED_TIME = "2025-01-02 03:04:05.000000"

pytest.importorskip("textual")
pytestmark = pytest.mark.slow  # Textual apps driven by its test pilot, with screen snapshots


def async_test(fn):
    """Run an async test (Textual's Pilot) on a fresh event loop; no pytest plugin needed."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return run


# ----- a small, deterministic zoo ------------------------------------------------------------

_LLAMA = {
    "model.embed_tokens.weight": (64, 16),
    "model.layers.0.input_layernorm.weight": (16,),
    "model.layers.0.self_attn.q_proj.weight": (16, 16),
    "model.layers.0.self_attn.k_proj.weight": (8, 16),
    "model.layers.0.self_attn.v_proj.weight": (8, 16),
    "model.layers.0.self_attn.o_proj.weight": (16, 16),
    "model.layers.0.post_attention_layernorm.weight": (16,),
    "model.layers.0.mlp.gate_proj.weight": (32, 16),
    "model.layers.0.mlp.up_proj.weight": (32, 16),
    "model.layers.0.mlp.down_proj.weight": (16, 32),
    "model.norm.weight": (16,),
    "lm_head.weight": (64, 16),
}
_LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16,
                 "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                 "num_key_value_heads": 1, "vocab_size": 64}
_VIT = {"vit.embeddings.patch_embeddings.projection.weight": (16, 1, 2, 2), "classifier.weight": (10, 16)}
_VIT_CONFIG = {"model_type": "vit", "architectures": ["ViTForImageClassification"], "hidden_size": 16,
               "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 8,
               "patch_size": 2}


def _weights(shapes: dict, seed: int) -> dict:
    """Exactly reproducible values (integer arithmetic, one IEEE division)."""
    import torch

    out = {}
    for i, (name, shape) in enumerate(shapes.items()):
        n = 1
        for s in shape:
            n *= s
        ints = (torch.arange(n, dtype=torch.int64) * (7 + i) + 13 * seed) % 97 - 48
        out[name] = (ints.to(torch.float32) / 1000).reshape(shape)
    return out


def _write(path: Path, shapes: dict, config: dict, seed: int) -> Path:
    from zoo import save_tensors

    save_tensors(path, _weights(shapes, seed), config=config)
    return path


def build_zoo(root: Path):
    """base -> ft-a, ft-b (role base) -> merged (run merge.linear) -> grand; plus a ViT."""
    from zoo import Catalog, Parent, RunRecord, save_tensors

    cat = Catalog(root / "catalog.db", store=root / "store")
    src = root / "src"
    cat.add(_write(src / "base", _LLAMA, _LLAMA_CONFIG, 0), name="base", copy=True, tags=["base", "llama-base"])
    cat.add(_write(src / "ft-a", _LLAMA, _LLAMA_CONFIG, 1), name="ft-a", copy=True, tags=["ft"],
            parents=[Parent("base", "base")])
    cat.add(_write(src / "ft-b", _LLAMA, _LLAMA_CONFIG, 2), name="ft-b", copy=True, tags=["ft"],
            parents=[Parent("base", "base")])
    a, b = cat.open("ft-a"), cat.open("ft-b")
    written = save_tensors(cat.incoming_path(), {n: (a.get(n) + b.get(n)) / 2 for n in a.names()},
                           config=_LLAMA_CONFIG)
    cat.register(written, "merged", run=RunRecord("merge.linear", "1", {"weights": [0.5, 0.5]}, seconds=0.25),
                 inputs=[Parent("ft-a@1", "input", 0.5), Parent("ft-b@1", "input", 0.5)], tags=["merge"])
    cat.add(_write(src / "grand", _LLAMA, _LLAMA_CONFIG, 3), name="grand", copy=True, tags=["ft"],
            parents=[Parent("merged", "base")])
    cat.add(_write(src / "vit-small", _VIT, _VIT_CONFIG, 4), name="vit-small", copy=True, tags=["vision"])
    cat.set_metrics("base", {"acc": 0.5, "loss": 1.25})
    cat.set_metrics("ft-a", {"acc": 0.625})
    cat.set_metrics("merged", {"acc": 0.75})
    cat.engine.dispose()
    with sqlite3.connect(root / "catalog.db") as con:  # fixed times: snapshots must not vary
        con.execute("UPDATE models SET created_at = ?, listing = NULL", (FIXED_TIME,))
        con.execute("UPDATE runs SET started_at = ?", (FIXED_TIME,))
    Catalog(root / "catalog.db", store=root / "store").refresh_listings()
    return root


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory) -> Path:
    return build_zoo(tmp_path_factory.mktemp("tui-zoo"))


@pytest.fixture
def app(zoo_root, tmp_path, monkeypatch):
    """A ZooApp on a private copy of the module's catalog (actions may change it)."""
    from tui.app import ZooApp
    from zoo import Catalog

    monkeypatch.delenv("NO_COLOR", raising=False)  # snapshots are in colour
    db = tmp_path / "catalog.db"
    with sqlite3.connect(zoo_root / "catalog.db") as src, sqlite3.connect(db) as dst:
        src.backup(dst)
    app = ZooApp(Catalog(db, store=zoo_root / "store"))
    app.theme = "textual-dark"
    app.notes = []
    notify = app.notify

    def recording_notify(message, *args, **kwargs):
        app.notes.append((str(message), kwargs.get("severity", "information")))
        return notify(message, *args, **kwargs)

    app.notify = recording_notify
    return app


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


async def settle(app, pilot) -> None:
    """Wait for workers (lineage, norms, long actions) and what they post back."""
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def assert_snapshot(app, pilot, name: str) -> None:
    """Compare the screen with the stored SVG. Some widgets (the footer's key bar) paint a
    few frames after mount on a busy machine, so a mismatch is retried for up to 3 s."""
    path = SNAPSHOTS / f"{name}.svg"
    await pilot.pause()
    svg = app.export_screenshot(title="weightzoo")
    if os.environ.get("ZOO_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(svg, encoding="utf-8")
        return
    assert path.exists(), f"no snapshot {path}; create it with ZOO_UPDATE_SNAPSHOTS=1"
    expected = path.read_text(encoding="utf-8")
    for _ in range(30):
        if svg == expected:
            return
        await pilot.pause(0.1)
        svg = app.export_screenshot(title="weightzoo")
    if svg != expected:
        got = Path(os.environ.get("TMPDIR", "/tmp")) / f"zoo-snapshot-{name}.svg"
        got.write_text(svg, encoding="utf-8")
        pytest.fail(f"screen differs from {path}; what it shows now: {got} "
                    "(ZOO_UPDATE_SNAPSHOTS=1 rewrites the snapshots)")


# ----- the catalog table -----------------------------------------------------------------------

@async_test
async def test_main_screen_lists_and_selects(app):
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        main = app.main
        assert shown_names(app) == ["base", "ft-a", "ft-b", "grand", "merged", "vit-small"]
        assert str(main.query_one("#count").render()) == "showing 6 of 6 models"
        assert main.selected_id == main.data.model_id("base")
        view = main.query_one("#details-view")
        assert view.info["ref"] == "base@1" and view.info["location_shown"] == "store:base/v1"
        await assert_snapshot(app, pilot, "main")
        await pilot.press("down", "down")
        assert main.data.by_id[main.selected_id].ref == "ft-b@1"
        assert view.info["ref"] == "ft-b@1"
        assert [p["parent"] for p in view.info["parents"]] == ["base@1"]
        assert len(view.info["files"]) == 2 and all(len(f["sha256"]) == 64 for f in view.info["files"])


@async_test
async def test_filter_as_you_type(app):
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
        assert "showing 1 of 1 matching · 6 models" in str(main.query_one("#count").render())
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
async def test_sort_keys_and_header_click(app):
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
async def test_rows_load_page_by_page(app, monkeypatch):
    import tui.screens.main as main_module

    monkeypatch.setattr(main_module, "PAGE", 2)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.main.table.row_count == 2
        assert str(app.main.query_one("#count").render()) == "showing 2 of 6 models"
        await pilot.press("down")  # onto the last loaded row: the next page comes
        assert app.main.table.row_count == 4
        await pilot.press("down", "down", "down")
        assert app.main.table.row_count == 6


# ----- details panes ------------------------------------------------------------------------------

@async_test
async def test_tensors_view_with_norms_and_search(app):
    from textual.widgets import DataTable

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("w")
        await settle(app, pilot)
        main = app.main
        assert main.query_one("#panes").active == "tensors"
        table = main.query_one("#tensor-table", DataTable)
        assert table.row_count == 12
        assert all(r.norm is not None and r.norm > 0 for r in main._tensor_rows)
        norm = str(table.get_cell("model.norm.weight", "norm"))
        assert norm != "…" and float(norm) > 0
        await assert_snapshot(app, pilot, "tensors")
        table.focus()
        main.query_one("#tensor-search").focus()
        await pilot.press(*"mlp")
        assert table.row_count == 3
        assert "3 of 12 tensors" in str(main.query_one("#tensor-summary").render())
        await pilot.press("escape")
        assert main.focused is table


@async_test
async def test_lineage_view_and_navigation(app):
    from tui.widgets.lineage import LineageTree

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        main = app.main
        await pilot.press("slash", *"merged", "enter", "l")
        await settle(app, pilot)
        tree = main.query_one("#lineage-tree", LineageTree)
        labels = _tree_labels(tree)
        assert labels[0].startswith("merged@1")
        made_from = [lab for lab in labels if lab.startswith(("ft-a@1", "ft-b@1"))]
        assert made_from and all("input · w=0.5 · run 1 merge.linear weights=[0.5,0.5]" in lab for lab in made_from)
        assert any(lab.startswith("base@1") and "(base)" in lab for lab in labels)  # grandparent, nested
        assert any(lab.startswith("grand@1") for lab in labels)
        await assert_snapshot(app, pilot, "lineage")
        # navigate: select the child node -> that model is selected and the tree re-centres on it
        tree.focus()
        line = next(i for i, lab in enumerate(_tree_lines(tree)) if lab.startswith("grand@1"))
        tree.cursor_line = line
        await pilot.press("enter")
        await settle(app, pilot)
        assert main.data.by_id[main.selected_id].name == "grand"
        assert main.query_one("#filter").value == ""  # the filter hid it: cleared
        assert main.table.selected_model_id == main.selected_id
        assert _tree_labels(tree)[0].startswith("grand@1")
        assert main.query_one("#details-view").info["ref"] == "grand@1"


def _tree_labels(tree) -> list[str]:
    out = []

    def walk(node):
        out.append(str(node.label))
        for child in node.children:
            walk(child)

    walk(tree.root)
    return out


def _tree_lines(tree) -> list[str]:
    return [str(tree.get_node_at_line(i).label) for i in range(tree.last_line + 1)]


# ----- actions ------------------------------------------------------------------------------------

@async_test
async def test_tag_action(app):
    from tui.screens.prompt import PromptScreen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("down", "t")  # ft-a
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"prod  -ft", "enter")
        await pilot.pause()
        assert app.main.data.catalog.tags_of("ft-a") == ["prod"]
        assert app.main.data.by_id[app.main.selected_id].tags == ["prod"]
        assert app.main.query_one("#details-view").info["tags"] == ["prod"]
        assert ("ft-a@1: tags = prod", "information") in app.notes
        await pilot.press("t")
        app.screen.query_one("#prompt-input").value = "other"
        await pilot.press("escape")  # cancels
        assert app.main.data.catalog.tags_of("ft-a") == ["prod"]


@async_test
async def test_compare_marked_with_selected(app):
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
async def test_verify_and_export_run_in_workers(app, tmp_path):
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
async def test_push_when_hub_is_missing_and_present(app, monkeypatch):
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
async def test_help_screen_lists_keys(app):
    from tui.screens.help import HelpScreen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = plain(app.screen.query_one("#help-body"))
        for words in ("add tags", "compare the marked model", "re-hash", "new folder", "push the selected model",
                      "recent operator runs", "filter by name", "tag:prod", "ctrl+p"):
            assert words in text
        await pilot.press("escape")
        assert app.screen is app.main


@async_test
async def test_runs_screen_selects_the_output(app):
    from tui.screens.runs import RunsScreen

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("r")
        assert isinstance(app.screen, RunsScreen)
        assert [r["operator"] for r in app.screen.runs] == ["merge.linear"]
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is app.main
        assert app.main.data.by_id[app.main.selected_id].name == "merged"


@async_test
async def test_command_palette_offers_the_actions(app):
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for t in ("Tag model", "Compare with marked", "Verify model", "Export model", "Push model to the Hub",
                  "Runs", "Sort by params"):
            assert t in titles
        mark = next(c for c in app.get_system_commands(app.screen) if c.title == "Mark model for compare")
        mark.callback()
        assert app.main.marked_id == app.main.selected_id


def test_zoo_tui_command_opens_the_chosen_catalog(zoo_root, monkeypatch, tmp_path):
    import tui.app
    from zoo.cli import main

    opened = []
    monkeypatch.setattr(tui.app.ZooApp, "run", lambda self: opened.append(self.data.catalog.url))
    monkeypatch.setenv("ZOO_STORE", str(tmp_path / "store"))
    assert main(["--catalog", str(zoo_root / "catalog.db"), "tui"]) == 0
    assert opened == [f"sqlite:///{zoo_root / 'catalog.db'}"]
