"""Opening the catalog database: URL resolution, the check that it is a weightzoo catalog
(`guard.py`) before anything is written, schema upgrades, SQLite pragmas, write transactions.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
BEGIN IMMEDIATE so that concurrent writers queue for the lock instead of failing with
"database is locked" when a read transaction tries to upgrade.
"""
from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, OperationalError
from sqlmodel import Session, SQLModel, create_engine, func, select

from ..errors import CatalogError
from .location import display_url, resolve_url as _resolve, sqlite_path
from . import tables
from .guard import MARKER_TABLE, SCHEMA_VERSION, Shape, check_shape, classify_sqlite, classify_tables
from .tables import Meta

BUSY_TIMEOUT_S = 60


def resolve_url(target: str | os.PathLike | None) -> str:
    """Like location.resolve_url, and checks that a URL parses."""
    url = _resolve(target)
    try:
        make_url(url)
    except ArgumentError:
        raise CatalogError(f"cannot read catalog URL {display_url(url)!r}") from None
    return url


def _create_tables(engine: Engine, attempts: int = 5) -> None:
    """CREATE TABLE IF NOT EXISTS, tolerating other processes creating them at the same
    moment (PostgreSQL reports that race as a unique violation in its catalogs)."""
    import time

    from sqlalchemy.exc import DBAPIError

    for attempt in range(attempts):
        try:
            SQLModel.metadata.create_all(engine, tables=[t.__table__ for t in _tables()])
            return
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def make_engine(url: str) -> Engine:
    """An engine on the catalog (nothing is opened yet: `open_catalog` checks the database first)."""
    path = sqlite_path(url)
    if path is None:
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except Exception as e:  # missing driver, bad URL parts
            raise CatalogError(f"cannot open catalog {display_url(url)!r}: {e}") from None
        _one_line_errors(engine, display_url(url))
        return engine
    if path.exists() and path.is_dir():
        raise CatalogError(f"catalog {path} is a folder, not a database file")
    if not path.parent.exists():
        raise CatalogError(f"catalog folder {path.parent} does not exist")
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        immediate = conn.get_execution_options().get("zoo_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    _one_line_errors(engine, str(path))
    return engine


# What the database says -> what the user reads (one line; the rest stays a bug).
_DB_TROUBLE = (
    ("malformed", "catalog {where} is damaged ({msg}): restore it from a backup (`zoo verify` checks it)"),
    ("not a database", "catalog {where} is damaged or not a database ({msg}): restore it from a backup"),
    ("database or disk is full", "catalog {where}: no space left on its disk ({msg}); free some space and run again"),
    ("disk I/O error", "catalog {where}: the disk failed to read or write ({msg}); check the disk and run again"),
)


def _one_line_errors(engine: Engine, where: str) -> None:
    """Damage, a full disk and I/O failures of the database become a CatalogError naming the catalog."""

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx):  # noqa: ANN001
        orig = ctx.original_exception
        msg = (str(orig).strip().splitlines() or [""])[0]
        for needle, text in _DB_TROUBLE:
            if needle in msg:
                raise CatalogError(text.format(where=where, msg=msg)) from None


def open_catalog(engine: Engine, url: str, *, create: bool = True, adopt_empty: bool = False) -> bool:
    """Check that the database is a weightzoo catalog (or may become one) before anything is
    written to it, then create or upgrade its tables. True when an older catalog was upgraded."""
    path = sqlite_path(url)
    where = str(path) if path else display_url(url)
    shape = classify_sqlite(path) if path is not None else _classify_server(engine, where)
    if path is not None and shape.kind == "missing" and create:
        _create_sqlite(path)  # appears whole, so a concurrent first open never sees it half-made
        shape = classify_sqlite(path)
    check_shape(shape, where, create=create, adopt_empty=adopt_empty)
    if is_current(shape):
        return False  # every table and the current marker are there: nothing to create or upgrade
    return init_schema(engine, url)


def is_current(shape: Shape) -> bool:
    """A catalog of this schema version holding every table (the guard read it without
    writing): opening it needs no DDL, which is most of the cost of opening."""
    return (shape.kind == "catalog" and shape.version == SCHEMA_VERSION
            and {t.__table__.name for t in _tables()} <= set(shape.tables))


def _create_sqlite(path: Path) -> None:
    """Make a new SQLite catalog beside `path` and link it into place in one step. If
    another process made one first, theirs stays and ours is dropped; either way every
    opener finds a complete catalog (the guard refuses empty databases, and a file
    being created by SQLite in place looks empty for a moment)."""
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    engine = make_engine(f"sqlite:///{tmp}")
    try:
        init_schema(engine, f"sqlite:///{tmp}")
        engine.dispose()  # the last connection closes: SQLite checkpoints the WAL into the file
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created the catalog first
        except OSError:  # a filesystem without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)


def _classify_server(engine: Engine, where: str) -> Shape:
    """A server database by its tables (read only). One without tables counts as missing:
    creating the catalog in an empty database is how a server catalog starts."""
    try:
        with engine.connect() as conn:
            insp = inspect(conn)
            tables = {t: frozenset(c["name"] for c in insp.get_columns(t)) for t in insp.get_table_names()}
            version = None
            if MARKER_TABLE in tables and {"key", "value"} <= tables[MARKER_TABLE]:
                row = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).first()
                version = int(row[0]) if row and str(row[0]).isdigit() else (None if row is None else -1)
    except DatabaseError as e:
        raise _open_error(e, where) from None
    if not tables:
        return Shape("missing")
    return classify_tables(tables, version)


# Columns added after the first release: (table, column, SQL type). Added where missing.
_ADDED_COLUMNS = (("models", "listing", "TEXT"), ("model_files", "mtime_ns", "BIGINT"))


def init_schema(engine: Engine, url: str) -> bool:
    """Create the tables if needed, add the columns and the marker an older catalog lacks
    (only call it on a database `check_shape` accepted). True when a catalog was upgraded."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        _create_tables(engine)
        with Session(engine.execution_options(zoo_write=True)) as s:
            conn = s.connection()
            meta = s.get(Meta, "schema_version")
            had_models = s.exec(select(func.count()).select_from(tables.ModelEntry)).one() > 0
            found = int(meta.value) if meta is not None else (1 if had_models else SCHEMA_VERSION)
            if found > SCHEMA_VERSION:
                raise CatalogError(f"catalog {_where(url)} has schema version {found}, newer than this weightzoo "
                                   f"reads (up to {SCHEMA_VERSION}): upgrade weightzoo")
            if found < SCHEMA_VERSION or meta is None:
                insp = inspect(conn)
                for table, column, sql_type in _ADDED_COLUMNS:
                    if column not in {c["name"] for c in insp.get_columns(table)}:
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
                meta = meta or Meta(key="schema_version", value="")
                meta.value = str(SCHEMA_VERSION)
                s.add(meta)
            try:
                s.commit()
            except IntegrityError:  # another process wrote the schema version first
                s.rollback()
        return found < SCHEMA_VERSION
    except DatabaseError as e:
        raise _open_error(e, _where(url)) from None


def _where(url: str) -> str:
    path = sqlite_path(url)
    return str(path) if path else display_url(url)


def _open_error(e: DatabaseError, where: str) -> CatalogError:
    msg = str(e.orig) if getattr(e, "orig", None) else str(e)
    if "not a database" in msg or "file is encrypted" in msg:
        return CatalogError(f"{where} is not a catalog database (it is some other file); pass another --catalog")
    if isinstance(e, OperationalError) and "unable to open" in msg:
        return CatalogError(f"cannot open catalog {where}: {msg}")
    return CatalogError(f"cannot use catalog {where}: {msg.splitlines()[0]}")


def _tables():
    return [tables.ModelEntry, tables.ModelFile, tables.ModelTag, tables.Run, tables.LineageEdge, tables.Meta]


def schema_version(engine: Engine) -> int:
    with Session(engine) as s:
        row = s.exec(select(Meta).where(Meta.key == "schema_version")).first()
        return int(row.value) if row else 0
