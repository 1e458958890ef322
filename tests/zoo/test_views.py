"""The read model (`zoo.catalog.views`) that the CLI and the TUI share: listing rows, show,
lineage and diff, and the light import path of `zoo ls`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo import Checkpoint, Parent, RunRecord, save_tensors
from zoo.catalog import views
from zoo.catalog.records import LS_KEYS
from zoo.errors import ZooError


def _shifted(src: Path, dst: Path, delta: float, drop: tuple[str, ...] = ()) -> Path:
    ckpt = Checkpoint.open(src)
    save_tensors(dst, {n: ckpt.get(n) + delta for n in ckpt.names() if n not in drop}, config=ckpt.config)
    return dst


@pytest.fixture
def zoo(catalog, llama_dir, vit_dir, tmp_path):
    """base -> ft (role base); ft + base -> merged (a run); plus an unrelated ViT."""
    base = catalog.add(llama_dir, name="base", tags=["b", "a"]).entry
    ft = catalog.add(_shifted(llama_dir, tmp_path / "ft", 0.5), name="ft", parents=[Parent("base", "base")]).entry
    a, b = catalog.open(base), catalog.open(ft)
    written = save_tensors(catalog.incoming_path(), {n: (a.get(n) + b.get(n)) / 2 for n in a.names()}, config=a.config)
    merged = catalog.register(written, "merged", run=RunRecord("merge.linear", "1", {"weights": [0.5, 0.5]}),
                              inputs=[Parent("base", "input", 0.5), Parent("ft", "input", 0.5)])
    catalog.add(vit_dir, name="vit")
    catalog.set_metrics("ft", {"acc": 0.5})
    return catalog, base, ft, merged


def test_ls_is_the_same_rows_by_every_path(zoo):
    cat = zoo[0]
    for filters in ({}, {"tag": "a"}, {"family": "vit"}, {"name": "m*"}):
        rows = cat.ls(**filters)
        assert rows and all(tuple(r) == LS_KEYS for r in rows)
        assert views.ls(cat, **filters) == rows  # an open catalog
        assert views.ls(cat.where, **filters) == rows  # where it is: plain SQL, no ORM
        assert json.loads(views.ls_json(cat.where, **filters)) == rows  # the stored listings
        assert json.loads(views.ls_json(cat, **filters)) == rows
    assert [r["ref"] for r in views.ls(cat)] == ["base@1", "ft@1", "merged@1", "vit@1"]
    assert views.ls(cat, name="base")[0]["tags"] == ["a", "b"]


def test_ls_of_a_sqlite_catalog_imports_no_sqlalchemy(zoo):
    """`zoo ls` starts fast: the read model on an existing SQLite catalog needs only the
    standard library (and orjson)."""
    code = (f"import sys; from zoo.catalog import views; rows = views.ls({str(zoo[0].where)!r}); "
            f"views.ls_json({str(zoo[0].where)!r}); "
            "heavy = [m for m in ('sqlalchemy', 'sqlmodel', 'torch', 'networkx') if m in sys.modules]; "
            "print(len(rows), heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "4 []"


def test_ls_of_a_missing_catalog_is_empty_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_STORE", str(tmp_path / "store"))
    target = tmp_path / "new.db"
    assert views.ls(target) == [] and views.ls_json(str(target)) == b"[]"
    assert sorted(tmp_path.iterdir()) == []  # reading creates no catalog file and no store


def test_show_is_catalog_show_plus_family_views(zoo):
    cat, base, ft, merged = zoo
    info = views.show(cat, "merged")
    plain = cat.show("merged")
    assert {k: v for k, v in info.items() if k not in ("widths", "config_summary")} == plain
    assert list(info)[:len(plain)] == list(plain)
    assert [p["parent"] for p in info["parents"]] == ["base@1", "ft@1"] and info["run"]["operator"] == "merge.linear"
    assert info["config"] == cat.show("base")["config"]  # a registered output keeps its config.json
    ft_info = views.show(cat, "ft")
    assert ft_info["widths"]["family"] == "llama" and ft_info["widths"]["layers"] == 2
    assert ft_info["config_summary"]["hidden_size"] == 32 and "num_key_value_heads" not in ft_info["config_summary"]
    assert views.show(cat, "ft", detailed=True)["config_summary"]["num_key_value_heads"] == 2


def test_lineage_nodes_edges_and_runs(zoo):
    cat, base, ft, merged = zoo
    lin = views.lineage(cat, "ft")
    assert lin.focus == ft.id and list(lin.nodes) == [ft.id, base.id, merged.id]  # focus, ancestors, descendants
    assert lin.nodes[base.id].ref == "base@1" and lin.nodes[base.id].family == "llama"
    assert len(lin) == 3 and len(lin.edges) == 3
    (up,) = lin.parents(ft.id)
    assert (up.parent, up.role, up.weight, up.run_id, up.operator) == (base.id, "base", None, None, None)
    into_merged = lin.parents(merged.id)
    assert [(e.parent, e.role, e.weight) for e in into_merged] == [(base.id, "input", 0.5), (ft.id, "input", 0.5)]
    assert all(e.operator == "merge.linear" and e.params == {"weights": [0.5, 0.5]} and e.run_id for e in into_merged)
    assert [e.child for e in lin.children(base.id)] == [ft.id, merged.id]
    only_up = views.lineage(cat, "ft", down=False)
    assert list(only_up.nodes) == [ft.id, base.id] and len(only_up.edges) == 1


def test_provenance_graph_is_built_from_the_lineage(zoo):
    from zoo.provenance import lineage_graph

    cat, base, ft, merged = zoo
    g = lineage_graph(cat, "merged")
    lin = views.lineage(cat, "merged")
    assert list(g.nodes) == list(lin.nodes) and g.nodes[merged.id]["focus"]
    assert [(u, v) for u, v in g.edges] == [(e.parent, e.child) for e in sorted(lin.edges, key=lambda e: e.parent)]
    assert g.edges[ft.id, merged.id] == {"role": "input", "weight": 0.5, "run_id": lin.parents(merged.id)[0].run_id,
                                         "operator": "merge.linear"}


def test_diff_rows_order_top_and_progress(llama_dir, tmp_path):
    a = Checkpoint.open(llama_dir)
    b = Checkpoint.open(_shifted(llama_dir, tmp_path / "b", 0.5, drop=("lm_head.weight",)))
    ticks = []
    rows = views.diff(a, b, progress=ticks.append)
    assert sum(ticks) == len(a.names())
    assert all(set(r) == {"name", "status", "rel_change", "max_abs", "shape_a", "shape_b"} for r in rows)
    same = [r for r in rows if r["status"] == "same-shape"]
    assert [r["rel_change"] for r in same] == sorted((r["rel_change"] for r in same), reverse=True)
    assert rows[-1] == {"name": "lm_head.weight", "status": "only-a", "rel_change": None, "max_abs": None,
                        "shape_a": [96, 32], "shape_b": None}
    norm = next(r for r in rows if r["name"] == "model.norm.weight")
    assert norm["rel_change"] == pytest.approx(0.5) and norm["shape_a"] == norm["shape_b"] == [32]
    top = views.diff(a, b, top=2)
    assert [r["name"] for r in top] == [r["name"] for r in same[:2]] + ["lm_head.weight"]
    assert views.diff_cells(rows[-1]) == ("lm_head.weight", "-", "-", "only in A")
    assert views.diff_cells(views.diff(a, a)[0])[1:] == ("0.000e+00", "0.000e+00", "identical")


def test_diff_refuses_models_with_no_common_tensor(llama_dir, vit_dir):
    with pytest.raises(ZooError, match="^llama and vit share no tensor names"):
        views.diff(Checkpoint.open(llama_dir), Checkpoint.open(vit_dir), labels=("llama", "vit"))
