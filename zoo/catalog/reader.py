"""Read-only catalog queries in portable SQL over any DB-API-style executor.

The read paths (`zoo ls`, `zoo show`, `zoo lineage`, ancestor/descendant walks) are plain
SQL returning tuples: going through the ORM costs an order of magnitude more per row, and
importing it costs more than the query. The same SQL runs through SQLAlchemy for any
database (`engine_executor`), or, for an existing SQLite catalog, through the standard
library alone (`open_sqlite_readonly`), so that read-only commands answer without
importing SQLAlchemy.
"""
from __future__ import annotations

import re
import sqlite3
from typing import Any, Callable, NamedTuple

from ..errors import CatalogError, NotFoundError, ZooError, did_you_mean
from .guard import FAST_READ_MIN_VERSION, check_shape, classify_sqlite
from .location import resolve_url, sqlite_path
from .records import edge_row, file_row, listing_row, model_row, run_row

Execute = Callable[[str, dict], list[tuple]]

REF = re.compile(r"^(?P<name>.+)@(?P<version>\d+)$")  # name@VERSION
_ALL_ROWS = 2**62  # "no limit" where an offset needs one (SQLite wants LIMIT before OFFSET; -1 is not portable)
_MMAP_BYTES = 2**31 - 2**16  # SQLite's largest mmap: listing 100,000 rows reads pages without a copy each

_LS_COLUMNS = "id, name, version, family, architecture, num_params, dtype, bytes, location, metrics, created_at"
_ENTRY_COLUMNS = ("id, name, version, family, architecture, num_params, dtype, bytes, location, path, owned, "
                  "digest, config, metrics, card, created_at")
_RUN_COLUMNS = "id, operator, operator_version, params, inputs, outputs, cache_key, status, started_at, seconds, timings"


class Entry(NamedTuple):
    """A model row as read by plain SQL (JSON columns parsed): what `records.model_row` and
    `zoo show` need, with the attributes of `tables.ModelEntry`."""

    id: int
    name: str
    version: int
    family: str | None
    architecture: str | None
    num_params: int
    dtype: str | None
    bytes: int
    location: str
    path: str | None
    owned: bool
    digest: str
    config: dict | None
    metrics: dict | None
    card: dict | None
    created_at: Any

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class _Named(NamedTuple):
    """The other end of a lineage edge, as `records.edge_row` reads it."""

    ref: str


class _EdgeRow(NamedTuple):
    parent_id: int
    child_id: int
    role: str
    weight: float | None
    run_id: int | None


class _FileRow(NamedTuple):
    path: str
    size: int
    sha256: str


class _RunRow(NamedTuple):
    id: int
    operator: str
    operator_version: str
    params: dict | None
    inputs: list | None
    outputs: list | None
    cache_key: str | None
    status: str
    started_at: Any
    seconds: float | None
    timings: dict | None


def _json(value: Any) -> Any:
    if value is None or value == "null":
        return None
    if not isinstance(value, (str, bytes)):
        return value  # a driver that parses JSON columns itself (psycopg)
    import orjson  # here, not at import: `zoo ls --json` never parses a row

    return orjson.loads(value)


# ----- listing -------------------------------------------------------------------------------

def check_page(limit: int | None, offset: int) -> None:
    """Refuse a negative page with one line (the CLI's --limit/--offset, the TUI, scripts)."""
    if limit is not None and limit < 0:
        raise ZooError(f"--limit {limit}: give a number of models, 0 or more")
    if offset < 0:
        raise ZooError(f"--offset {offset}: give a number of models to skip, 0 or more")


def _page(limit: int | None, offset: int) -> tuple[str, dict]:
    check_page(limit, offset)
    if limit is None and not offset:
        return "", {}
    return " LIMIT :limit OFFSET :offset", {"limit": _ALL_ROWS if limit is None else limit, "offset": offset}


def _filters(family: str | None, tag: str | None, name: str | None) -> tuple[str, dict]:
    clauses, params = [], {}
    if family:
        clauses.append("family = :family")
        params["family"] = family
    if name:
        clauses.append("name LIKE :name")
        params["name"] = name.replace("*", "%")
    if tag:
        clauses.append("id IN (SELECT model_id FROM model_tags WHERE tag = :tag)")
        params["tag"] = tag
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def ls_rows(execute: Execute, family: str | None = None, tag: str | None = None, name: str | None = None,
            limit: int | None = None, offset: int = 0) -> list[dict]:
    """Models as `zoo ls --json` items (built by records.listing_row), ordered by name and
    version; `limit` and `offset` page through them."""
    where, params = _filters(family, tag, name)
    page, paging = _page(limit, offset)
    rows = execute(f"SELECT {_LS_COLUMNS} FROM models{where} ORDER BY name, version{page}", {**params, **paging})
    tag_sql = "SELECT model_id, tag FROM model_tags"
    if where or page:
        tag_sql += f" WHERE model_id IN (SELECT id FROM models{where} ORDER BY name, version{page})"
    tags: dict[int, list[str]] = {}
    for mid, t in execute(tag_sql + " ORDER BY tag", {**params, **paging}):
        tags.setdefault(mid, []).append(t)
    return [listing_row(*row[:9], tags.get(row[0], []), _json(row[9]), row[10]) for row in rows]


def ls_json(execute: Execute, family: str | None = None, tag: str | None = None, name: str | None = None,
            limit: int | None = None, offset: int = 0) -> bytes | None:
    """`zoo ls --json` output straight from the stored per-row listings, in one query and
    without decoding a row (None when some rows have none yet: the caller builds the rows
    instead). SQLite only (the listing is read as bytes)."""
    where, params = _filters(family, tag, name)
    page, paging = _page(limit, offset)
    try:
        rows = execute(f"SELECT CAST(listing AS BLOB) FROM models{where} ORDER BY name, version{page}",
                       {**params, **paging})
    except sqlite3.OperationalError:  # a catalog from before schema 2, not yet opened for writing
        return None
    try:
        return b"[" + b",".join([r for (r,) in rows]) + b"]"
    except TypeError:  # a row without its stored listing
        return None


# ----- one model -----------------------------------------------------------------------------

def _entry(row: tuple) -> Entry:
    values = list(row)
    values[10] = bool(values[10])
    values[12:15] = (_json(v) for v in values[12:15])
    return Entry(*values)


def resolve(execute: Execute, ref: str | int, where: str) -> Entry:
    """The entry `ref` names: `name` (its latest version), `name@N`, or an id (an int, or
    digits that are no model's name); else a one-line NotFoundError with a "did you mean"."""
    select = f"SELECT {_ENTRY_COLUMNS} FROM models WHERE "
    rows: list[tuple] = []
    if isinstance(ref, int):
        rows = execute(select + "id = :id", {"id": ref})
    else:
        try:
            ref.encode("utf-8")
        except UnicodeEncodeError:  # a name or path that is not valid UTF-8 names no entry
            raise NotFoundError(f"no model {ascii(ref)} in catalog {where}: the reference is not valid UTF-8") from None
        ref = ref.strip()
        m = REF.match(ref)
        if m:
            rows = execute(select + "name = :name AND version = :version", {"name": m["name"], "version": int(m["version"])})
        else:
            rows = execute(select + "name = :name ORDER BY version DESC LIMIT 1", {"name": ref})
            if not rows and ref.isdigit():
                rows = execute(select + "id = :id", {"id": int(ref)})
    if rows:
        return _entry(rows[0])
    m = REF.match(ref) if isinstance(ref, str) else None
    name = m["name"] if m else str(ref)
    hint = did_you_mean(name, [r[0] for r in execute("SELECT DISTINCT name FROM models", {})])
    raise NotFoundError(f"no model {ref!r} in catalog {where}{hint}; see `zoo ls`")


def show_row(execute: Execute, entry: Entry) -> dict:
    """Everything about one model: the `zoo show --json` object (what `Catalog.show` gives),
    read by indexed queries (tags, files, its edges both ways, the run that made it)."""
    mid = {"id": entry.id}
    tags = [t for (t,) in execute("SELECT tag FROM model_tags WHERE model_id = :id ORDER BY tag", mid)]
    files = execute("SELECT path, size, sha256 FROM model_files WHERE model_id = :id ORDER BY id", mid)
    edges = execute("SELECT e.parent_id, e.child_id, e.role, e.weight, e.run_id, m.name, m.version FROM lineage e "
                    "JOIN models m ON m.id = CASE WHEN e.child_id = :id THEN e.parent_id ELSE e.child_id END "
                    "WHERE e.child_id = :id OR e.parent_id = :id ORDER BY e.id", mid)
    parents, children = [], []
    for *edge, other, version in edges:
        e, named = _EdgeRow(*edge), _Named(f"{other}@{version}")
        if e.child_id == entry.id:
            parents.append(edge_row(e, named, "parent"))
        if e.parent_id == entry.id:
            children.append(edge_row(e, named, "child"))
    run = _producing_run(execute, entry.id)
    row = model_row(entry, tags)
    row.update(path=entry.path, owned=entry.owned, digest=entry.digest, files=[file_row(_FileRow(*f)) for f in files],
               config=entry.config, card=entry.card or {}, parents=parents, children=children,
               run=run_row(run) if run else None)
    return row


def _producing_run(execute: Execute, model_id: int) -> _RunRow | None:
    """The run that made a model: the run of one of its lineage edges, else (a run with no
    inputs, e.g. a trained population) the run that lists it among its outputs."""
    runs = execute(f"SELECT {', '.join('r.' + c for c in _RUN_COLUMNS.split(', '))} FROM runs r "
                   "JOIN lineage e ON e.run_id = r.id WHERE e.child_id = :id ORDER BY e.id LIMIT 1", {"id": model_id})
    if not runs:
        runs = execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE CAST(outputs AS VARCHAR) LIKE :pattern "
                       "ORDER BY id LIMIT 1", {"pattern": f'%{{"id": {int(model_id)}, %'})
    if not runs:
        return None
    values = list(runs[0])
    for i in (3, 4, 5, 10):  # params, inputs, outputs, timings
        values[i] = _json(values[i])
    return _RunRow(*values)


# ----- lineage -------------------------------------------------------------------------------

def lineage_edges(execute: Execute, focus: int, up: bool = True, down: bool = True) -> list[tuple]:
    """The lineage edges among a model, its ancestors (`up`) and descendants (`down`), in one
    recursive query, in the order they were recorded: (parent_id, child_id, role, weight,
    run_id, operator, run params, then each end's name, version, family, num_params)."""
    walks, members = [], ["SELECT id FROM models WHERE id = :focus"]
    for wanted, walk, near, far in ((up, "up_walk", "parent_id", "child_id"), (down, "down_walk", "child_id", "parent_id")):
        if wanted:  # the first step is its own query, as in `walk_ids`: portable recursive typing
            walks.append(f"{walk}(id) AS (SELECT {near} FROM lineage WHERE {far} = :focus UNION "
                         f"SELECT l.{near} FROM lineage l JOIN {walk} w ON l.{far} = w.id)")
            members.append(f"SELECT id FROM {walk}")
    walks.append(f"members(id) AS ({' UNION '.join(members)})")
    sql = ("WITH RECURSIVE " + ", ".join(walks) +
           " SELECT e.parent_id, e.child_id, e.role, e.weight, e.run_id, r.operator, r.params,"
           " p.name, p.version, p.family, p.num_params, c.name, c.version, c.family, c.num_params"
           " FROM lineage e JOIN models p ON p.id = e.parent_id JOIN models c ON c.id = e.child_id"
           " LEFT JOIN runs r ON r.id = e.run_id"
           " WHERE e.parent_id IN (SELECT id FROM members) AND e.child_id IN (SELECT id FROM members)"
           " ORDER BY e.id")
    return [(*row[:6], _json(row[6]), *row[7:]) for row in execute(sql, {"focus": focus})]


def walk_ids(execute: Execute, start: int, up: bool) -> list[int]:
    """Transitive parents (up) or children of a model, by one recursive query."""
    near, far = ("parent_id", "child_id") if up else ("child_id", "parent_id")
    sql = (f"WITH RECURSIVE walk(id) AS (SELECT {near} FROM lineage WHERE {far} = :start"
           f" UNION SELECT l.{near} FROM lineage l JOIN walk w ON l.{far} = w.id) SELECT id FROM walk")
    return [r[0] for r in execute(sql, {"start": start})]


# ----- executors -----------------------------------------------------------------------------

def open_sqlite_readonly(target: str | None) -> Execute | None:
    """An executor on an existing SQLite catalog opened read-only with the standard
    library, or None when the catalog is elsewhere, absent, or from a schema the fast path
    does not read (callers then go through `Catalog`). A database that is not a weightzoo
    catalog is refused here, as `Catalog` would refuse it, and left untouched."""
    path = sqlite_path(resolve_url(target))
    if path is None:
        return None
    shape = classify_sqlite(path)
    if shape.kind == "missing":
        return None
    check_shape(shape, str(path), create=False)
    if shape.kind != "catalog" or shape.version < FAST_READ_MIN_VERSION:
        return None
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    con.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")  # read pages in place: a 100,000-row listing in half the time

    def execute(sql: str, params: dict) -> list[tuple]:
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "no such column" in str(e):
                raise  # a schema without the column: the caller falls back
            raise CatalogError(f"catalog {path} is damaged ({e}): restore it from a backup "
                               "(`zoo verify` checks it)") from None

    return execute


def engine_executor(engine: Any) -> Execute:
    """An executor on a SQLAlchemy engine (any database): the reader's SQL through `text()`."""
    from sqlalchemy import text

    def execute(sql: str, params: dict) -> list[tuple]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    return execute


def missing_sqlite(target: str | None) -> bool:
    """True when the catalog is a SQLite file that does not exist (read-only commands then
    show an empty result or say so, and create nothing)."""
    path = sqlite_path(resolve_url(target))
    return path is not None and not path.exists()
