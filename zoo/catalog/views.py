"""The read model: what the front ends (the `zoo` CLI and the TUI) show about models.

Listing rows, one model's details, its lineage and the per-tensor diff of two models are
computed here once; front ends only format them. Importing this module is light (no
SQLAlchemy, torch or networkx), and on an existing SQLite catalog `ls`, `show` and
`lineage` read it with the standard library alone (`reader.py`, plain SQL); any other
database is read with the same SQL through SQLAlchemy.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from ..errors import ZooError
from . import reader
from .location import resolve_url, sqlite_path

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from .catalog import Catalog
    from .tables import ModelEntry

# A catalog, or where one is (a path, a SQLAlchemy URL, or None for $ZOO_CATALOG / ./catalog.db).
Source = Union["Catalog", str, os.PathLike, None]
Ref = Union[str, int, "ModelEntry"]

__all__ = ["Edge", "Lineage", "Node", "Source", "diff", "diff_cells", "lineage", "ls", "ls_json", "show"]


# ----- reading a source ----------------------------------------------------------------------

def _sqlite_reader(source: Source) -> reader.Execute | None:
    return reader.open_sqlite_readonly(_target(source))


def _target(source: Source) -> str | None:
    target = source if _is_target(source) else source.url
    return None if target is None else str(target)


def _is_target(source: Any) -> bool:
    """Where a catalog is, rather than an open `Catalog` (told apart without importing it)."""
    return source is None or isinstance(source, (str, os.PathLike))


def _catalog(source: Source) -> Catalog:
    if not _is_target(source):
        return source
    from .catalog import Catalog

    return Catalog(source, create=False)


def _open(source: Source) -> tuple[reader.Execute, str]:
    """How to read `source`, and its name for messages: the standard library on an existing
    SQLite catalog; otherwise `Catalog` (which refuses a missing one for a command that only
    reads, and upgrades an old one) and the same SQL through SQLAlchemy."""
    fast = _sqlite_reader(source)
    if fast is not None:
        return fast, str(sqlite_path(resolve_url(_target(source))))
    cat = _catalog(source)
    return reader.engine_executor(cat.engine), cat.where


def _resolve(execute: reader.Execute, ref: Ref, where: str) -> reader.Entry:
    return reader.resolve(execute, ref if isinstance(ref, (str, int)) else ref.id, where)


# ----- listing -----------------------------------------------------------------------------

def ls(source: Source, family: str | None = None, tag: str | None = None, name: str | None = None, *,
       limit: int | None = None, offset: int = 0) -> list[dict]:
    """Models as `zoo ls --json` items, ordered by name and version (`limit` of them after
    skipping `offset`: a page). An existing SQLite catalog is read with the standard library
    alone; anything else through `Catalog`."""
    reader.check_page(limit, offset)
    fast = _sqlite_reader(source)
    if fast is not None:
        return reader.ls_rows(fast, family, tag, name, limit, offset)
    if missing_sqlite(source):
        return []  # no catalog yet: nothing to list, and nothing is created
    return reader.ls_rows(reader.engine_executor(_catalog(source).engine), family, tag, name, limit, offset)


def ls_json(source: Source, family: str | None = None, tag: str | None = None, name: str | None = None, *,
            limit: int | None = None, offset: int = 0) -> bytes:
    """The `zoo ls --json` output (without the final newline): straight from the stored
    per-row listings when every row has one, else the rows of `ls` serialised."""
    reader.check_page(limit, offset)
    fast = _sqlite_reader(source)
    if fast is not None:
        stored = reader.ls_json(fast, family, tag, name, limit, offset)
        if stored is not None:
            return stored
    import orjson

    return orjson.dumps(ls(source, family, tag, name, limit=limit, offset=offset), default=str,
                        option=orjson.OPT_NON_STR_KEYS)


def missing_sqlite(source: Source) -> bool:
    """Whether `source` names a SQLite catalog file that does not exist (yet)."""
    return _is_target(source) and reader.missing_sqlite(_target(source))


# ----- one model ---------------------------------------------------------------------------

def show(source: Source, ref: Ref, *, detailed: bool = False) -> dict:
    """Everything about one model (the `zoo show --json` object): what `Catalog.show` gives
    (read here with plain SQL), plus the family's `widths` and the config's size fields,
    `config_summary` (with `detailed`, the TUI's longer list)."""
    from ..checkpoint import adapter_summary
    from ..families import config_summary, widths_summary

    execute, where = _open(source)
    info = reader.show_row(execute, _resolve(execute, ref, where))
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


def lineage(source: Source, ref: Ref, up: bool = True, down: bool = True) -> Lineage:
    """The ancestors (`up`) and descendants (`down`) of a model, with each edge's role,
    weight and producing run (operator, params): one recursive query after the reference
    is resolved, however deep the ancestry."""
    execute, where = _open(source)
    entry = _resolve(execute, ref, where)
    rows = reader.lineage_edges(execute, entry.id, up=up, down=down)
    edges = [Edge(*row[:6], row[6] or None) for row in rows]
    known = {entry.id: Node(entry.id, entry.ref, entry.family, entry.num_params)}
    for parent, child, *_, p_name, p_version, p_family, p_params, c_name, c_version, c_family, c_params in rows:
        known.setdefault(parent, Node(parent, f"{p_name}@{p_version}", p_family, p_params))
        known.setdefault(child, Node(child, f"{c_name}@{c_version}", c_family, c_params))
    lin = Lineage(entry.id, known, edges)
    above = _reach(lin, up=True) if up else set()
    below = _reach(lin, up=False) - above if down else set()
    order = [entry.id, *sorted(above - {entry.id}), *sorted(below - {entry.id})]  # focus, ancestors, descendants
    lin.nodes = {i: known[i] for i in order}
    return lin


def _reach(lin: Lineage, up: bool) -> set[int]:
    """The models reachable from the focus along the lineage's edges, towards its parents
    (`up`) or its children: its ancestors or descendants, as the recursive query found them."""
    step = lin.parents if up else lin.children
    seen: set[int] = set()
    todo = [lin.focus]
    while todo:
        for e in step(todo.pop()):
            nxt = e.parent if up else e.child
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


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
