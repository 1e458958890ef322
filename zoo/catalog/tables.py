"""Catalog tables (SQLModel): models and their files and tags, runs, lineage edges."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from .guard import MARKER_TABLE, SCHEMA_VERSION  # noqa: F401 - the version lives with the marker check


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ModelEntry(SQLModel, table=True):
    """One checkpoint version. `location` is a path or `hub:repo@revision`; `path` is where
    its files are on this machine (None when they are not)."""

    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_model_name_version"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    version: int
    family: Optional[str] = Field(default=None, index=True)
    architecture: Optional[str] = None
    num_params: int = 0
    dtype: Optional[str] = None
    bytes: int = 0
    location: str
    path: Optional[str] = None
    owned: bool = False  # files live in the store and go with the entry
    digest: str = Field(index=True)  # combined sha256 over (file, sha256) pairs
    config: Optional[dict] = Field(default=None, sa_column=Column(JSON))
    metrics: Optional[dict] = Field(default=None, sa_column=Column(JSON))
    card: Optional[dict] = Field(default=None, sa_column=Column(JSON))  # hub repo/commit etc.
    created_at: datetime = Field(default_factory=utcnow)
    # the row's `zoo ls --json` item, kept current on every change, so listing a large
    # catalog is one column read instead of rebuilding each row in Python
    listing: Optional[str] = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class ModelFile(SQLModel, table=True):
    __tablename__ = "model_files"
    id: Optional[int] = Field(default=None, primary_key=True)
    model_id: int = Field(sa_column=Column(Integer, ForeignKey("models.id", ondelete="CASCADE"), index=True, nullable=False))
    path: str
    size: int
    sha256: str
    # st_mtime_ns when the bytes were hashed: a cheap "unchanged?" check before an operator
    # reads the file (None in catalogs from before schema 3: the first check re-hashes)
    mtime_ns: Optional[int] = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class ModelTag(SQLModel, table=True):
    __tablename__ = "model_tags"
    model_id: int = Field(sa_column=Column(Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True))
    tag: str = Field(primary_key=True, index=True)


class Run(SQLModel, table=True):
    """One operator execution: what ran, with which params, on which inputs (by digest)."""

    __tablename__ = "runs"
    id: Optional[int] = Field(default=None, primary_key=True)
    operator: str = Field(index=True)
    operator_version: str = "0"
    params: Optional[dict] = Field(default=None, sa_column=Column(JSON))
    inputs: Optional[list] = Field(default=None, sa_column=Column(JSON))  # [{id, ref, digest, role}]
    outputs: Optional[list] = Field(default=None, sa_column=Column(JSON))  # [{id, ref, digest}]
    cache_key: Optional[str] = Field(default=None, index=True)
    status: str = "ok"
    started_at: datetime = Field(default_factory=utcnow)
    seconds: Optional[float] = None
    timings: Optional[dict] = Field(default=None, sa_column=Column(JSON))


class LineageEdge(SQLModel, table=True):
    __tablename__ = "lineage"
    id: Optional[int] = Field(default=None, primary_key=True)
    parent_id: int = Field(sa_column=Column(Integer, ForeignKey("models.id", ondelete="CASCADE"), index=True, nullable=False))
    child_id: int = Field(sa_column=Column(Integer, ForeignKey("models.id", ondelete="CASCADE"), index=True, nullable=False))
    role: str = "input"
    weight: Optional[float] = None
    run_id: Optional[int] = Field(default=None, sa_column=Column(Integer, ForeignKey("runs.id", ondelete="SET NULL"), nullable=True))


class Meta(SQLModel, table=True):
    """The marker that makes a database a weightzoo catalog: `schema_version` (see guard.py)."""

    __tablename__ = MARKER_TABLE
    key: str = Field(primary_key=True)
    value: str
