"""Plain, JSON-ready views of catalog rows: the stable `--json` schema."""
from __future__ import annotations

from typing import Any

from .reader import iso_time as _iso
from .tables import LineageEdge, ModelEntry, ModelFile, Run

# Keys of one `zoo ls --json` item, in order. Adding keys is allowed; renaming is not.
LS_KEYS = ("id", "ref", "name", "version", "family", "architecture", "params", "dtype",
           "bytes", "location", "tags", "metrics", "created")


def model_row(m: Any, tags: list[str]) -> dict:
    """One model as a dict; `m` may be a ModelEntry or a row with the same attributes."""
    return {
        "id": m.id,
        "ref": f"{m.name}@{m.version}",
        "name": m.name,
        "version": m.version,
        "family": m.family,
        "architecture": m.architecture,
        "params": m.num_params,
        "dtype": m.dtype,
        "bytes": m.bytes,
        "location": m.location,
        "tags": sorted(tags),
        "metrics": m.metrics or {},
        "created": _iso(m.created_at),
    }


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
        "started": _iso(r.started_at),
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
