"""Provenance: ancestors/descendants through several generations, recipes, pictures."""
from __future__ import annotations

import networkx as nx
import pytest

from zoo import Parent, RunRecord, save_tensors
from zoo.provenance import lineage_graph, recipe, render_tree, to_dot, to_png

from tests.helpers.models import perturbed_copy


@pytest.fixture
def family(catalog, llama_dir, tmp_path):
    """base -> (ft_a, ft_b) -> merged (a run with params) -> grandchild."""
    from zoo import Checkpoint

    base = catalog.add(llama_dir, name="base").entry
    a = catalog.add(perturbed_copy(llama_dir, tmp_path / "a", 0.01), name="ft-a", parents=[Parent("base", "base")]).entry
    b = catalog.add(perturbed_copy(llama_dir, tmp_path / "b", 0.02), name="ft-b", parents=[Parent("base", "base")]).entry
    ca, cb = catalog.open(a), catalog.open(b)
    merged_tensors = {n: (ca.get(n) + cb.get(n)) / 2 for n in ca.names()}
    written = save_tensors(catalog.incoming_path(), merged_tensors, config=ca.config)
    run = RunRecord("merge.linear", "1", {"weights": [0.5, 0.5]}, cache_key="k1", seconds=0.1)
    merged = catalog.register(written, "merged", run=run, inputs=[Parent(a.ref, "input", 0.5), Parent(b.ref, "input", 0.5)])
    grand = catalog.add(perturbed_copy(Checkpoint.open(merged.path).path, tmp_path / "g", 0.03), name="grand",
                        parents=[Parent("merged", "base")]).entry
    return dict(base=base, a=a, b=b, merged=merged, grand=grand)


def test_ancestors_and_descendants(catalog, family):
    assert {m.name for m in catalog.ancestors("grand")} == {"merged", "ft-a", "ft-b", "base"}
    assert {m.name for m in catalog.descendants("base")} == {"ft-a", "ft-b", "merged", "grand"}
    assert catalog.ancestors("base") == [] and catalog.descendants("grand") == []


def test_register_records_run_and_weighted_edges(catalog, family):
    merged = family["merged"]
    assert merged.owned and merged.path.startswith(str(catalog.store))
    edges = catalog.parents(merged)
    assert [(m.name, e.role, e.weight) for e, m in edges] == [("ft-a", "input", 0.5), ("ft-b", "input", 0.5)]
    run = catalog.producing_run(merged)
    assert run.operator == "merge.linear" and run.params == {"weights": [0.5, 0.5]}
    assert [i["digest"] for i in run.inputs] == [family["a"].digest, family["b"].digest]
    assert catalog.find_run("k1")[1][0].id == merged.id


def test_graph_and_recipe(catalog, family):
    g = lineage_graph(catalog, "merged")
    assert nx.is_directed_acyclic_graph(g) and g.number_of_nodes() == 5
    assert g.edges[family["a"].id, family["merged"].id]["operator"] == "merge.linear"
    steps = recipe(catalog, "grand")
    assert [s["operator"] for s in steps] == ["merge.linear"]


def test_pictures(catalog, family, tmp_path):
    g = lineage_graph(catalog, "merged")
    dot = to_dot(g)
    assert dot.startswith("digraph") and dot.count("->") == 5 and "merge.linear" in dot
    png = to_png(g, tmp_path / "tree.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(render_tree(g, family["merged"].id))
    text = console.export_text()
    assert "ft-a@1" in text and "grand@1" in text and "base@1" in text


def test_failed_register_leaves_no_row_and_no_files(catalog, llama_dir):
    from zoo import Checkpoint
    from zoo.errors import NotFoundError

    ck = Checkpoint.open(llama_dir)
    written = save_tensors(catalog.incoming_path(), {n: ck.get(n) for n in ck.names()})
    with pytest.raises(NotFoundError):
        catalog.register(written, "x", inputs=[Parent("nope")])
    assert catalog.count() == 0 and not written.path.exists()
