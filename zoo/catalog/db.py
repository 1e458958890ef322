"""Opening the catalog database: URL resolution, SQLite pragmas, write transactions.

SQLite runs in WAL mode with a busy timeout, and write transactions start with
BEGIN IMMEDIATE so that concurrent writers queue for the lock instead of failing with
"database is locked" when a read transaction tries to upgrade.
"""
from __future__ import annotations

import os

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, OperationalError
from sqlmodel import SQLModel, create_engine, select
from sqlmodel import Session

from ..errors import CatalogError
from .location import display_url, resolve_url as _resolve, sqlite_path
from . import tables
from .tables import SCHEMA_VERSION, Meta

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
    path = sqlite_path(url)
    if path is None:
        try:
            return create_engine(url, pool_pre_ping=True)
        except Exception as e:  # missing driver, bad URL parts
            raise CatalogError(f"cannot open catalog {display_url(url)!r}: {e}") from None
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

    return engine


def init_schema(engine: Engine, url: str) -> bool:
    """Create the tables if needed; refuse files that are not (weightzoo) databases.
    True when an older catalog was migrated."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        _create_tables(engine)
        with Session(engine.execution_options(zoo_write=True)) as s:
            meta = s.get(Meta, "schema_version")
            migrated = meta is not None and int(meta.value) < SCHEMA_VERSION
            if meta is None:
                s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(meta.value) < 2:  # version 1 catalogs lack models.listing (filled lazily)
                if "listing" not in {c["name"] for c in inspect(s.connection()).get_columns("models")}:
                    s.connection().exec_driver_sql("ALTER TABLE models ADD COLUMN listing TEXT")
                meta.value = str(SCHEMA_VERSION)
                s.add(meta)
            try:
                s.commit()
            except IntegrityError:  # another process wrote the schema version first
                s.rollback()
        return migrated
    except DatabaseError as e:
        msg = str(e.orig) if getattr(e, "orig", None) else str(e)
        path = sqlite_path(url)
        where = path if path else display_url(url)
        if "not a database" in msg or "file is encrypted" in msg:
            raise CatalogError(f"{where} is not a catalog database (it is some other file); pass another --catalog") from None
        if isinstance(e, OperationalError) and "unable to open" in msg:
            raise CatalogError(f"cannot open catalog {where}: {msg}") from None
        raise CatalogError(f"cannot use catalog {where}: {msg.splitlines()[0]}") from None


def _tables():
    return [tables.ModelEntry, tables.ModelFile, tables.ModelTag, tables.Run, tables.LineageEdge, tables.Meta]


def schema_version(engine: Engine) -> int:
    with Session(engine) as s:
        row = s.exec(select(Meta).where(Meta.key == "schema_version")).first()
        return int(row.value) if row else 0
