"""Graphviz DOT text of a model's family tree, written straight from the read model's
`Lineage`: no networkx, so `zoo lineage --format dot` on a 1,000-deep ancestry is one
query and one loop. `zoo.provenance.to_dot` writes a networkx graph with the same writer.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalog.views import Edge, Lineage

DotNode = tuple[int, str, "str | None", bool]  # id, ref, family, is the focus
DotEdge = tuple[int, int, str]  # parent id, child id, label


def edge_label(role: str, weight: float | None, operator: str | None) -> str:
    """'input w=0.5 merge.linear': how an edge is labelled in every lineage picture."""
    parts = [role]
    if weight is not None:
        parts.append(f"w={weight:g}")
    if operator:
        parts.append(operator)
    return " ".join(parts)


def _quoted(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_text(nodes: Iterable[DotNode], edges: Iterable[DotEdge]) -> str:
    """DOT, parents above children: one box per node (the focus in bold), one labelled
    arrow per edge, in the order given."""
    lines = ["digraph lineage {", "  rankdir=TB;", "  node [shape=box, style=rounded];"]
    for n, ref, family, focus in nodes:
        label = _quoted(ref)[:-1] + (f"\\n{_quoted(family)[1:-1]}" if family else "") + '"'
        lines.append(f"  m{n} [label={label}" + (', style="rounded,bold"' if focus else "") + "];")
    lines.extend(f"  m{u} -> m{v} [label={_quoted(label)}];" for u, v, label in edges)
    lines.append("}")
    return "\n".join(lines) + "\n"


def lineage_dot(lin: Lineage) -> str:
    """The DOT text of a `Lineage`. Edges come grouped by parent in node order, each
    (parent, child) pair once with its last recorded edge's label: the order and merging a
    networkx graph of the lineage has, which `zoo lineage --format dot` always printed."""
    pairs: dict[int, dict[int, Edge]] = {}
    for e in lin.edges:
        pairs.setdefault(e.parent, {})[e.child] = e
    nodes = [(n.id, n.ref, n.family, n.id == lin.focus) for n in lin.nodes.values()]
    edges = [(u, v, edge_label(e.role, e.weight, e.operator)) for u in lin.nodes for v, e in pairs.get(u, {}).items()]
    return dot_text(nodes, edges)
