"""Is this database a weightzoo catalog? Decided before anything is written to it.

The catalog opens an existing database only if it is its own: the marker table `zoo_meta`
holds the schema version. A catalog from a release before the marker (exactly the zoo's
tables, no marker) is recognised and gets the marker. Anything else (another program's
database, an empty file, a newer schema) is refused with one line, before a table is
created or the journal mode is changed, so the file stays byte-identical.

Plain `sqlite3` only: `zoo ls` runs these checks without importing SQLAlchemy.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..errors import CatalogError, NotFoundError

MARKER_TABLE = "zoo_meta"
# The newest schema this code reads and writes: 2 added models.listing, 3 model_files.mtime_ns.
SCHEMA_VERSION = 3
# What the fast read path needs (models.listing): older catalogs are read through `Catalog`.
FAST_READ_MIN_VERSION = 2
# The tables (and the columns every release had) of a weightzoo catalog, marker aside.
OWN_TABLES: dict[str, frozenset[str]] = {
    "models": frozenset({"id", "name", "version", "family", "location", "digest", "path"}),
    "model_files": frozenset({"id", "model_id", "path", "size", "sha256"}),
    "model_tags": frozenset({"model_id", "tag"}),
    "runs": frozenset({"id", "operator", "params", "inputs", "outputs"}),
    "lineage": frozenset({"id", "parent_id", "child_id", "role"}),
}


class NoCatalogError(NotFoundError):
    """A command that only reads found no catalog (and creates none)."""


@dataclass(frozen=True)
class Shape:
    """What a database holds. kind: missing, empty, catalog (version set), legacy (the
    zoo's tables without the marker), foreign (tables listed), not-sqlite, damaged."""

    kind: str
    version: int = 0
    tables: tuple[str, ...] = ()
    detail: str = ""


def classify_tables(tables: dict[str, frozenset[str]], version: int | None) -> Shape:
    """Classify from user tables -> columns, and the marker's schema version (None: no row)."""
    names = tuple(sorted(tables))
    if not tables:
        return Shape("empty")
    if MARKER_TABLE in tables:
        if {"key", "value"} <= tables[MARKER_TABLE]:
            rest = {t: c for t, c in tables.items() if t != MARKER_TABLE}
            if version is not None:
                return Shape("catalog", version, names)
            if not rest or _is_own(rest):  # a marker table without its row: a creation cut short
                return Shape("legacy", 0, names)
        return Shape("foreign", tables=names)
    if _is_own(tables):
        return Shape("legacy", 0, names)
    return Shape("foreign", tables=names)


def _is_own(tables: dict[str, frozenset[str]]) -> bool:
    return set(tables) == set(OWN_TABLES) and all(OWN_TABLES[t] <= tables[t] for t in OWN_TABLES)


def classify_sqlite(path: Path) -> Shape:
    """Look at a SQLite file read-only (nothing is created or changed, not even a journal)."""
    if not path.exists():
        return Shape("missing")
    if path.is_dir():
        raise CatalogError(f"catalog {path} is a folder, not a database file")
    if path.stat().st_size == 0:
        return Shape("empty")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error as e:
        raise CatalogError(f"cannot open catalog {path}: {e}") from None
    try:
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                           "AND name NOT LIKE 'sqlite_%'")]
        tables = {n: frozenset(r[1] for r in con.execute(f'PRAGMA table_info("{n}")')) for n in names}
        version = None
        if MARKER_TABLE in tables and {"key", "value"} <= tables[MARKER_TABLE]:
            row = con.execute(f"SELECT value FROM {MARKER_TABLE} WHERE key = 'schema_version'").fetchone()
            version = _version(row[0]) if row else None
    except sqlite3.DatabaseError as e:
        msg = str(e)
        if "not a database" in msg or "encrypted" in msg:
            return Shape("not-sqlite", detail=msg)
        return Shape("damaged", detail=msg)
    finally:
        con.close()
    return classify_tables(tables, version)


def _version(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1  # a marker that is not ours


def check_shape(shape: Shape, where: str, *, create: bool, adopt_empty: bool = False) -> None:
    """Refuse, with one line, what the catalog must not open; return when it may.
    create: a missing catalog (SQLite: no file; a server: a database without tables) may be made.
    adopt_empty: an empty file (or a database without tables) may become a catalog (`zoo init`)."""
    kind = shape.kind
    if kind == "missing" and not create:
        raise NoCatalogError(f"no catalog at {where} (create one with `zoo init`, or `zoo add` a model)")
    if kind == "empty" and not adopt_empty:
        raise CatalogError(f"{where} is an empty database, not a weightzoo catalog: run `zoo init` to make "
                           "it one, or pass another --catalog")
    if kind == "not-sqlite":
        raise CatalogError(f"{where} is not a catalog database (it is some other file); pass another --catalog")
    if kind == "damaged":
        raise CatalogError(f"catalog {where} is damaged ({shape.detail}); restore it from a backup")
    if kind == "foreign":
        shown = ", ".join(shape.tables[:5]) + (", ..." if len(shape.tables) > 5 else "")
        raise CatalogError(f"{where} is not a weightzoo catalog (another program's database, with tables {shown}); "
                           "nothing was changed - pass another --catalog")
    if kind == "catalog" and shape.version <= 0:
        raise CatalogError(f"{where} has a {MARKER_TABLE} table whose schema version weightzoo cannot read; "
                           "nothing was changed - pass another --catalog")
    if kind == "catalog" and shape.version > SCHEMA_VERSION:
        raise CatalogError(f"catalog {where} has schema version {shape.version}, newer than this weightzoo reads "
                           f"(up to {SCHEMA_VERSION}): upgrade weightzoo")


def quick_check_sqlite(path: Path, limit: int = 5) -> list[str]:
    """SQLite's `PRAGMA quick_check` (read-only): [] when the file is sound, else its findings."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            rows = [r[0] for r in con.execute(f"PRAGMA quick_check({int(limit)})")]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return [str(e)]
    if rows == ["ok"]:
        return []
    lines = [ln.strip() for r in rows for ln in str(r).splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("***")] or ["integrity check failed"]
