"""The provenance graph of a model (networkx): its ancestors and descendants, the recipe
of runs that produced it, and pictures of the family tree (terminal tree, DOT; the PNG is
drawn by `zoo.lineage_picture`).
The lineage itself comes from the read model, `zoo.catalog.views.lineage`."""
from __future__ import annotations

from pathlib import Path

import networkx as nx

from .catalog import Catalog, ModelEntry
from .catalog.views import Lineage, lineage


def lineage_graph(catalog: Catalog, ref: str | int | ModelEntry, up: bool = True, down: bool = True) -> nx.DiGraph:
    """Nodes are model ids (attrs: ref, family, params, focus); edges parent -> child
    (attrs: role, weight, run_id, operator)."""
    return to_graph(lineage(catalog, ref, up=up, down=down))


def to_graph(lin: Lineage) -> nx.DiGraph:
    """A `Lineage` as a networkx graph (see `lineage_graph` for its attributes)."""
    g = nx.DiGraph()
    for n in lin.nodes.values():
        g.add_node(n.id, ref=n.ref, family=n.family, params=n.params, focus=n.id == lin.focus)
    for e in lin.edges:
        g.add_edge(e.parent, e.child, role=e.role, weight=e.weight, run_id=e.run_id, operator=e.operator)
    return g


def recipe(catalog: Catalog, ref: str | int | ModelEntry) -> list[dict]:
    """The runs that made `ref` and its ancestors, oldest first: enough to reproduce it."""
    from .catalog.records import run_row

    g = lineage_graph(catalog, ref, up=True, down=False)
    run_ids = []
    for node in nx.topological_sort(g):
        for _, _, data in g.in_edges(node, data=True):
            if data["run_id"] is not None and data["run_id"] not in run_ids:
                run_ids.append(data["run_id"])
    runs = {r.id: r for r in catalog.runs() if r.id in set(run_ids)}
    return [run_row(runs[i]) for i in run_ids if i in runs]


def recipe_pipeline(catalog: Catalog, ref: str | int | ModelEntry) -> dict:
    """The recipe of `ref` as a `zoo build` pipeline: one step per run of its ancestry,
    parents first, each with its operator, recorded params, and inputs (earlier steps, or
    catalog refs for the roots, with roles and weights as the operator was called). Each
    step's `out:` is the name of the entry it made, so in a catalog holding the roots under
    the same refs the build writes the same bytes (and in the original catalog it reuses
    the recorded runs). An output of a run with several outputs is named by its catalog ref."""
    from .errors import ZooError
    from .reproduce import ancestry, call_inputs

    entry = catalog.get(ref)
    steps: dict[str, dict] = {}
    step_of: dict[int, str] = {}  # entry id -> the step that makes it (single-output runs)
    for node, run in ancestry(catalog, entry):
        if run is None or node.id in step_of:
            continue
        name = node.name if node.name not in steps else f"{node.name}-v{node.version}"
        inputs = []
        for parent, e in call_inputs(catalog, node, run):
            item: dict = {"ref": step_of.get(e.id, e.ref), "role": parent.role}
            if parent.weight is not None:
                item["weight"] = parent.weight
            inputs.append(item)
        step: dict = {"op": run.operator}
        if len(run.outputs or []) <= 1:
            step["out"] = node.name
            step_of[node.id] = name
        step["params"] = dict(run.params or {})
        if inputs:
            step["inputs"] = inputs
        steps[name] = step
    if not steps:
        raise ZooError(f"{entry.ref} was added, not made by a recorded run: it has no recipe")
    return {"name": f"recipe-{entry.name}", "steps": steps}


def recipe_yaml(catalog: Catalog, ref: str | int | ModelEntry) -> str:
    """`recipe_pipeline` as the YAML `zoo build` reads, with a header naming the roots."""
    import yaml

    entry = catalog.get(ref)
    doc = recipe_pipeline(catalog, entry)
    steps = doc["steps"]
    roots = sorted({i["ref"] for s in steps.values() for i in s.get("inputs", []) if i["ref"] not in steps})
    head = [f"# The recipe of {entry.ref} (digest {entry.digest}), written by `zoo lineage --recipe`.",
            "# `zoo build THIS_FILE` re-runs it; `zoo reproduce --recursive` checks it in place."]
    if roots:
        head.append(f"# It starts from these catalog entries: {', '.join(roots)}")
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _edge_label(data: dict) -> str:
    from .lineage_dot import edge_label

    return edge_label(data["role"], data.get("weight"), data.get("operator"))


def render_tree(g: nx.DiGraph, focus: int):
    """A rich Tree: the model, its ancestry (parents nested under children) and its
    descendants."""
    from rich.tree import Tree

    root = Tree(f"[bold]{g.nodes[focus]['ref']}[/bold]")
    if g.in_degree(focus):
        up = root.add("[dim]made from[/dim]")
        _grow(g, focus, up, parents=True, seen=set())
    if g.out_degree(focus):
        down = root.add("[dim]used by[/dim]")
        _grow(g, focus, down, parents=False, seen=set())
    return root


def _grow(g: nx.DiGraph, node: int, branch, parents: bool, seen: set) -> None:
    edges = g.in_edges(node, data=True) if parents else g.out_edges(node, data=True)
    for u, v, data in edges:
        other = u if parents else v
        label = f"{g.nodes[other]['ref']}  [dim]({_edge_label(data)})[/dim]"
        if other in seen:
            branch.add(label + " [dim]…[/dim]")
            continue
        seen.add(other)
        _grow(g, other, branch.add(label), parents, seen)


def to_dot(g: nx.DiGraph) -> str:
    """Graphviz DOT text, parents above children (`zoo.lineage_dot` writes it; `zoo lineage
    --format dot` writes it from the read model's `Lineage` directly, without networkx)."""
    from .lineage_dot import dot_text

    return dot_text(((n, d["ref"], d.get("family"), bool(d.get("focus"))) for n, d in g.nodes(data=True)),
                    ((u, v, _edge_label(d)) for u, v, d in g.edges(data=True)))


def to_png(g: nx.DiGraph, path: str | Path, engine: str = "auto") -> Path:
    """Draw the family tree into the PNG file `path` (`zoo.lineage_picture`): parents above
    children, each run once as a box above what it made, each input's role and weight as a
    tag on its edge; Graphviz's `dot` lays it out when it is on PATH (`engine="auto"`),
    else our own layered layout (`engine="builtin"`)."""
    from .lineage_picture import write_png

    return write_png(g, path, engine)  # type: ignore[arg-type]
