"""`tui.dag`: a lineage in generations, each model once, on hand-made lineages whose layers
are worked out by hand (no Textual, no catalog)."""
from __future__ import annotations

from tui.dag import edge_role, generations, layers, run_text, runs_of
from zoo.catalog.views import Edge, Lineage, Node


def _lineage(focus: int, edges: list[tuple[int, int]], **run) -> Lineage:
    ids = sorted({i for e in edges for i in e} | {focus})
    nodes = {i: Node(i, f"m{i}@1", "llama", 100) for i in ids}
    return Lineage(focus, nodes, [Edge(p, c, "base", None, None, None, None) for p, c in edges])


def test_diamond_each_model_once_in_its_generation():
    # 1 -> 2, 1 -> 3, 2 -> 4, 3 -> 4: the root once, the merge once with two parent edges
    lin = _lineage(4, [(1, 2), (1, 3), (2, 4), (3, 4)])
    rows = layers(lin)
    assert [(r.node.id, r.generation) for r in rows] == [(1, 0), (2, 1), (3, 1), (4, 2)]
    by_id = {r.node.id: r for r in rows}
    assert [e.parent for e in by_id[4].parents] == [2, 3]
    assert [e.child for e in by_id[1].children] == [2, 3]
    assert [r.is_focus for r in rows] == [False, False, False, True]


def test_generation_is_the_longest_path_from_a_root():
    # 1 -> 2 -> 3 -> 5 and 1 -> 5 directly, 4 -> 5: 5 sits below 3 (generation 3), not at 1
    lin = _lineage(5, [(1, 2), (2, 3), (3, 5), (1, 5), (4, 5)])
    assert generations(lin) == {1: 0, 2: 1, 3: 2, 4: 0, 5: 3}
    assert [r.node.id for r in layers(lin)] == [1, 4, 2, 3, 5]


def test_a_cycle_is_drawn_not_dropped():
    # never recorded by a catalog; the view must still show every model once
    lin = _lineage(1, [(1, 2), (2, 1), (0, 1)])
    rows = layers(lin)
    assert sorted(r.node.id for r in rows) == [0, 1, 2]
    assert rows[0].node.id == 0 and rows[0].generation == 0


def test_edge_and_run_words():
    params = {"weights": [0.5, 0.5], "normalize": True, "lr": 0.0003}
    a = Edge(1, 3, "input", 0.5, 7, "merge.linear", params)
    b = Edge(2, 3, "input", 0.25, 7, "merge.linear", params)
    assert edge_role(a) == "input w=0.5" and edge_role(Edge(1, 2, "base", None, None, None, None)) == "base"
    assert run_text(a) == "run 7 merge.linear weights=[0.5,0.5], normalize=True, lr=0.0003"
    assert runs_of([a, b]) == [run_text(a)]  # one run behind both inputs of a merge
    assert run_text(Edge(1, 2, "base", None, None, None, None)) is None
