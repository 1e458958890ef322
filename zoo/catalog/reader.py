"""Read-only catalog queries in portable SQL over any DB-API-style executor.

The hot read paths (`zoo ls`, ancestor/descendant walks) are plain SQL returning tuples:
going through the ORM costs an order of magnitude more per row. The same SQL runs through
SQLAlchemy for any database, or, for an existing SQLite catalog, through the standard
library alone so that read-only commands answer without importing SQLAlchemy.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Callable

import orjson

from ..errors import CatalogError
from .guard import FAST_READ_MIN_VERSION, check_shape, classify_sqlite
from .location import resolve_url, sqlite_path
from .records import listing_row

Execute = Callable[[str, dict], list[tuple]]

_LS_COLUMNS = "id, name, version, family, architecture, num_params, dtype, bytes, location, metrics, created_at"


def _json(value: Any) -> Any:
    if value is None or value == "null":
        return None
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


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


def ls_rows(execute: Execute, family: str | None = None, tag: str | None = None, name: str | None = None) -> list[dict]:
    """Models as `zoo ls --json` items (built by records.listing_row)."""
    where, params = _filters(family, tag, name)
    rows = execute(f"SELECT {_LS_COLUMNS} FROM models{where} ORDER BY name, version", params)
    tag_sql = "SELECT model_id, tag FROM model_tags"
    if where:
        tag_sql += f" WHERE model_id IN (SELECT id FROM models{where})"
    tags: dict[int, list[str]] = {}
    for mid, t in execute(tag_sql + " ORDER BY tag", params):
        tags.setdefault(mid, []).append(t)
    return [listing_row(*row[:9], tags.get(row[0], []), _json(row[9]), row[10]) for row in rows]


def ls_json(execute: Execute, family: str | None = None, tag: str | None = None, name: str | None = None) -> bytes | None:
    """`zoo ls --json` output straight from the stored per-row listings (None when some
    rows have none yet: the caller builds the rows instead)."""
    where, params = _filters(family, tag, name)
    try:
        rows = execute(f"SELECT listing FROM models{where} ORDER BY name, version", params)
    except sqlite3.OperationalError:  # a catalog from before schema 2, not yet opened for writing
        return None
    if any(r[0] is None for r in rows):
        return None
    return ("[" + ",".join(r[0] for r in rows) + "]").encode()


def walk_ids(execute: Execute, start: int, up: bool) -> list[int]:
    """Transitive parents (up) or children of a model, by one recursive query."""
    near, far = ("parent_id", "child_id") if up else ("child_id", "parent_id")
    sql = (f"WITH RECURSIVE walk(id) AS (SELECT {near} FROM lineage WHERE {far} = :start"
           f" UNION SELECT l.{near} FROM lineage l JOIN walk w ON l.{far} = w.id) SELECT id FROM walk")
    return [r[0] for r in execute(sql, {"start": start})]


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

    def execute(sql: str, params: dict) -> list[tuple]:
        try:
            return con.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "no such column" in str(e):
                raise  # a schema without the column: the caller falls back
            raise CatalogError(f"catalog {path} is damaged ({e}): restore it from a backup "
                               "(`zoo verify` checks it)") from None

    return execute


def missing_sqlite(target: str | None) -> bool:
    """True when the catalog is a SQLite file that does not exist (read-only commands then
    show an empty result or say so, and create nothing)."""
    path = sqlite_path(resolve_url(target))
    return path is not None and not path.exists()
