"""A lineage laid out as a DAG for a text view: each model once, in generations (the longest
path from a root of that lineage), with the edges into and out of it.

A tree drawing repeats a shared ancestor once per path (a merge of two fine-tunes of one
base shows the base twice); layers do not. The nodes and edges come from the read model
(`zoo.catalog.views.lineage`); this module only orders them and words them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from zoo.catalog.views import Edge, Lineage, Node

from .data import fmt_value


@dataclass(frozen=True)
class DagRow:
    """One model of the lineage and its edges (in the order they were recorded)."""

    node: Node
    generation: int
    parents: list[Edge]
    children: list[Edge]
    is_focus: bool


def generations(lineage: Lineage) -> dict[int, int]:
    """Each model's generation: 0 for a model with no parent in the lineage, else one more
    than its latest parent (Kahn's order). Models on a cycle, which a catalog never records,
    are put after the rest rather than dropped."""
    indegree = {i: sum(e.parent in lineage.nodes for e in lineage.parents(i)) for i in lineage.nodes}
    gen = dict.fromkeys(lineage.nodes, 0)
    ready = [i for i, d in indegree.items() if d == 0]
    done: set[int] = set()
    while ready:
        node = ready.pop()
        done.add(node)
        for e in lineage.children(node):
            if e.child not in indegree:
                continue
            gen[e.child] = max(gen[e.child], gen[node] + 1)
            indegree[e.child] -= 1
            if indegree[e.child] == 0:
                ready.append(e.child)
    if len(done) < len(gen):
        last = max((gen[i] for i in done), default=-1)
        for i in gen:
            if i not in done:
                gen[i] = last + 1
    return gen


def layers(lineage: Lineage) -> list[DagRow]:
    """The rows of the DAG view: by generation, then in catalog order (id)."""
    gen = generations(lineage)
    order = sorted(lineage.nodes, key=lambda i: (gen[i], i))
    return [DagRow(lineage.nodes[i], gen[i],
                   [e for e in lineage.parents(i) if e.parent in lineage.nodes],
                   [e for e in lineage.children(i) if e.child in lineage.nodes],
                   i == lineage.focus)
            for i in order]


def edge_role(edge: Edge) -> str:
    """How the parent was used: 'base', 'input w=0.5'."""
    return edge.role if edge.weight is None else f"{edge.role} w={edge.weight:g}"


def run_text(edge: Edge) -> str | None:
    """The run that made the child, in full (the view wraps it): 'run 1 merge.linear weights=[0.5,0.5]'."""
    if edge.run_id is None:
        return None
    text = f"run {edge.run_id}"
    if edge.operator:
        text += f" {edge.operator}"
    if edge.params:
        text += " " + ", ".join(f"{k}={_value(v)}" for k, v in edge.params.items())
    return text


def runs_of(edges: list[Edge]) -> list[str]:
    """The distinct runs behind some edges (a merge's inputs share one run), in order."""
    seen: dict[int, str] = {}
    for e in edges:
        if e.run_id is not None and e.run_id not in seen:
            seen[e.run_id] = run_text(e) or ""
    return list(seen.values())


def _value(v: Any) -> str:
    return fmt_value(v) if isinstance(v, (int, float, str)) else json.dumps(v, separators=(",", ":"))
