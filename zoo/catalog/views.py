"""The read model: what the front ends (the `zoo` CLI and the TUI) show about models.

Listing rows, one model's details, its lineage and the per-tensor diff of two models are
computed here once; front ends only format them. Importing this module is light (no
SQLAlchemy, torch or networkx): `zoo ls` on an existing SQLite catalog reads it with the
standard library, and the heavy parts load only when a function needs them.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from ..errors import ZooError
from .reader import ls_json as _stored_ls_json
from .reader import ls_rows, missing_sqlite, open_sqlite_readonly

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from .catalog import Catalog
    from .tables import ModelEntry

# A catalog, or where one is (a path, a SQLAlchemy URL, or None for $ZOO_CATALOG / ./catalog.db).
Source = Union["Catalog", str, os.PathLike, None]
Ref = Union[str, int, "ModelEntry"]

__all__ = ["Edge", "Lineage", "Node", "Source", "diff", "diff_cells", "lineage", "ls", "ls_json", "show"]


# ----- listing -----------------------------------------------------------------------------

def ls(source: Source, family: str | None = None, tag: str | None = None, name: str | None = None) -> list[dict]:
    """Models as `zoo ls --json` items, ordered by name and version. An existing SQLite
    catalog is read with the standard library alone; anything else through `Catalog`."""
    fast = _sqlite_reader(source)
    if fast is not None:
        return ls_rows(fast, family, tag, name)
    if _is_target(source) and missing_sqlite(None if source is None else str(source)):
        return []  # no catalog yet: nothing to list, and nothing is created
    return _catalog(source).ls(family=family, tag=tag, name=name)


def ls_json(source: Source, family: str | None = None, tag: str | None = None, name: str | None = None) -> bytes:
    """The `zoo ls --json` output (without the final newline): straight from the stored
    per-row listings when every row has one, else the rows of `ls` serialised."""
    fast = _sqlite_reader(source)
    if fast is not None:
        stored = _stored_ls_json(fast, family, tag, name)
        if stored is not None:
            return stored
    import orjson

    return orjson.dumps(ls(source, family, tag, name), default=str, option=orjson.OPT_NON_STR_KEYS)


def _sqlite_reader(source: Source):
    target = source if _is_target(source) else source.url
    return open_sqlite_readonly(None if target is None else str(target))


def _catalog(source: Source) -> Catalog:
    if not _is_target(source):
        return source
    from .catalog import Catalog

    return Catalog(source, create=False)


def _is_target(source: Any) -> bool:
    """Where a catalog is, rather than an open `Catalog` (told apart without importing it)."""
    return source is None or isinstance(source, (str, os.PathLike))


# ----- one model ---------------------------------------------------------------------------

def show(catalog: Catalog, ref: Ref, *, detailed: bool = False) -> dict:
    """Everything about one model (the `zoo show --json` object): `Catalog.show` plus the
    family's `widths` and the config's size fields, `config_summary` (with `detailed`, the
    TUI's longer list)."""
    from ..families import config_summary, widths_summary

    from ..checkpoint import adapter_summary

    info = catalog.show(ref)
    adapter = adapter_summary(info["config"])
    if adapter is not None:  # a PEFT adapter: its settings, and its base as a catalog entry when one is
        base = next((p["parent"] for p in info["parents"] if p["role"] == "base"), None)
        info["adapter"] = {**adapter, "base_ref": base}
        info["widths"], info["config_summary"] = None, {}
        return info
    info["widths"] = widths_summary(info["config"])
    info["config_summary"] = config_summary(info["config"], detailed=detailed)
    return info


# ----- lineage -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """A model in a lineage."""

    id: int
    ref: str
    family: str | None
    params: int | None


@dataclass(frozen=True)
class Edge:
    """A lineage edge parent -> child, with the run that made the child (if recorded)."""

    parent: int
    child: int
    role: str
    weight: float | None
    run_id: int | None
    operator: str | None
    params: dict | None


@dataclass
class Lineage:
    """A model's family tree: the model (`focus`), its ancestors and descendants, and the
    edges among them in the order they were recorded."""

    focus: int
    nodes: dict[int, Node]  # the focus first, then ancestors, then descendants (ids ascending)
    edges: list[Edge]
    _up: dict[int, list[Edge]] = field(init=False, repr=False, compare=False)
    _down: dict[int, list[Edge]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._up, self._down = {}, {}
        for e in self.edges:
            self._up.setdefault(e.child, []).append(e)
            self._down.setdefault(e.parent, []).append(e)

    def parents(self, model_id: int) -> list[Edge]:
        return self._up.get(model_id, [])

    def children(self, model_id: int) -> list[Edge]:
        return self._down.get(model_id, [])

    def __len__(self) -> int:
        return len(self.nodes)


def lineage(catalog: Catalog, ref: Ref, up: bool = True, down: bool = True) -> Lineage:
    """The ancestors (`up`) and descendants (`down`) of a model, with each edge's role,
    weight and producing run (operator, params)."""
    entry = catalog.get(ref)
    members = {entry.id: entry}
    if up:
        members.update({m.id: m for m in catalog.ancestors(entry)})
    if down:
        members.update({m.id: m for m in catalog.descendants(entry)})
    nodes = {i: Node(i, m.ref, m.family, m.num_params) for i, m in members.items()}
    edges = [Edge(e.parent_id, e.child_id, e.role, e.weight, e.run_id, run.operator if run else None,
                  (run.params or None) if run else None)
             for e, run in catalog.edges_among(members)]
    return Lineage(entry.id, nodes, edges)


# ----- diff --------------------------------------------------------------------------------

def diff(a: Checkpoint, b: Checkpoint, top: int = 0, *, labels: tuple[str, str] | None = None,
         progress: Callable[[int], None] | None = None) -> list[dict]:
    """Per-tensor comparison (the `zoo diff --json` rows {name, status, rel_change, max_abs,
    shape_a, shape_b}): tensors of the same shape, most changed first (only the `top` N
    when given), then those only in one model or with different shapes. `labels` name the
    models in the error when they share no tensor; `progress` is called once per tensor of A."""
    from ..compare import diff_checkpoints

    if not set(a.names()) & set(b.names()):
        la, lb = labels or (str(a.path), str(b.path))
        raise ZooError(f"{la} and {lb} share no tensor names; they are different architectures")
    rows = diff_checkpoints(a, b, progress=progress)
    same = sorted((r for r in rows if r.status == "same-shape"), key=lambda r: -(r.rel_change or 0))
    other = [r for r in rows if r.status != "same-shape"]
    if top:
        same = same[:top]
    return [{"name": r.name, "status": r.status, "rel_change": r.rel_change, "max_abs": r.max_abs,
             "shape_a": list(r.shape_a) if r.shape_a else None, "shape_b": list(r.shape_b) if r.shape_b else None}
            for r in same + other]


_ONLY = {"only-a": "only in A", "only-b": "only in B"}


def diff_cells(row: dict) -> tuple[str, str, str, str]:
    """A diff row as front ends print it: (tensor, rel change, max |Δ|, note)."""
    if row["status"] == "same-shape":
        return (row["name"], f"{row['rel_change']:.3e}", f"{row['max_abs']:.3e}",
                "identical" if row["max_abs"] == 0 else "")
    note = _ONLY.get(row["status"], f"shape {row['shape_a'] or []} vs {row['shape_b'] or []}")
    return row["name"], "-", "-", note
