"""Plain, JSON-ready views of catalog rows: the stable `--json` schema.

Light on purpose (no SQLAlchemy at import): the plain-SQL reader builds its rows here too,
from its named tuples (`reader.Entry` ...), which carry the ORM rows' attribute names.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tables import LineageEdge, ModelEntry, ModelFile, Run

# Keys of one `zoo ls --json` item, in order. Adding keys is allowed; renaming is not.
LS_KEYS = ("id", "ref", "name", "version", "family", "architecture", "params", "dtype",
           "bytes", "location", "tags", "metrics", "created")


def iso_time(value: Any) -> str | None:
    """UTC timestamp as 'YYYY-MM-DDTHH:MM:SSZ' from a datetime or SQLite's text form."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    text = str(value)
    return f"{text[:10]}T{text[11:19]}Z"


def listing_row(model_id: int, name: str, version: int, family: str | None, architecture: str | None,
                params: int | None, dtype: str | None, nbytes: int | None, location: str | None,
                tags: list[str], metrics: dict | None, created: Any) -> dict:
    """One `zoo ls --json` item (keys LS_KEYS, in order): the only place such a row is built,
    whether from an ORM entry (`model_row`) or from plain-SQL tuples (`reader.ls_rows`)."""
    return {"id": model_id, "ref": f"{name}@{version}", "name": name, "version": version, "family": family,
            "architecture": architecture, "params": params, "dtype": dtype, "bytes": nbytes, "location": location,
            "tags": tags, "metrics": metrics or {}, "created": iso_time(created)}


def model_row(m: Any, tags: list[str]) -> dict:
    """One model as a listing row; `m` may be a ModelEntry or a row with the same attributes."""
    return listing_row(m.id, m.name, m.version, m.family, m.architecture, m.num_params, m.dtype, m.bytes,
                       m.location, sorted(tags), m.metrics, m.created_at)


def file_row(f: ModelFile) -> dict:
    return {"path": f.path, "size": f.size, "sha256": f.sha256}


def run_row(r: Run) -> dict:
    return {
        "id": r.id,
        "operator": r.operator,
        "operator_version": r.operator_version,
        "params": r.params or {},
        "inputs": r.inputs or [],
        "outputs": r.outputs or [],
        "cache_key": r.cache_key,
        "status": r.status,
        "started": iso_time(r.started_at),
        "seconds": r.seconds,
        "notes": (r.timings or {}).get("notes"),
    }


def edge_row(e: LineageEdge, other: ModelEntry | None, side: str) -> dict:
    return {
        side: other.ref if other else None,
        f"{side}_id": e.parent_id if side == "parent" else e.child_id,
        "role": e.role,
        "weight": e.weight,
        "run_id": e.run_id,
    }
