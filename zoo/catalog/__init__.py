"""The catalog: models, files, tags, runs and lineage in any SQLAlchemy database.

Imported lazily so that `zoo.catalog.reader` (plain SQL over the standard library) can be
used without loading SQLAlchemy.
"""
from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "AddResult": "zoo.catalog.catalog", "Catalog": "zoo.catalog.catalog", "NewEntry": "zoo.catalog.catalog",
    "Parent": "zoo.catalog.catalog", "RunRecord": "zoo.catalog.catalog", "VerifyResult": "zoo.catalog.catalog",
    "StagedInput": "zoo.catalog.catalog",
    "LineageEdge": "zoo.catalog.tables", "ModelEntry": "zoo.catalog.tables", "ModelFile": "zoo.catalog.tables",
    "ModelTag": "zoo.catalog.tables", "Run": "zoo.catalog.tables",
}
__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
