"""The catalog: models, files, tags, runs and lineage in any SQLAlchemy database.

Imported lazily so that `zoo.catalog.reader` (plain SQL over the standard library) can be
used without loading SQLAlchemy.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AddResult": "zoo.catalog.catalog", "Catalog": "zoo.catalog.catalog", "Parent": "zoo.catalog.catalog",
    "RunRecord": "zoo.catalog.catalog", "VerifyResult": "zoo.catalog.catalog",
    "LineageEdge": "zoo.catalog.tables", "ModelEntry": "zoo.catalog.tables", "ModelFile": "zoo.catalog.tables",
    "ModelTag": "zoo.catalog.tables", "Run": "zoo.catalog.tables",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'zoo.catalog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
