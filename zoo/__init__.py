"""weightzoo core: checkpoint I/O, the catalog with provenance, and the operator registry.

    from zoo import Catalog, Checkpoint
    cat = Catalog()                      # ./catalog.db, or $ZOO_CATALOG
    entry = cat.add("path/to/hf-folder").entry
    ckpt = cat.open(entry.ref)           # lazy, memory-mapped tensors

Names are imported on first use, so `zoo` commands that need only part of the core
(e.g. `zoo ls` on a SQLite catalog) start without loading the rest.
"""
from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "AddResult": "zoo.catalog", "Catalog": "zoo.catalog", "ModelEntry": "zoo.catalog", "Parent": "zoo.catalog",
    "RunRecord": "zoo.catalog", "Checkpoint": "zoo.checkpoint", "ZooError": "zoo.errors",
    "CheckpointWriter": "zoo.writer", "TensorSpec": "zoo.writer", "save_tensors": "zoo.writer",
    "run_operator": "zoo.runner", "get_operator": "zoo.registry",
}
__all__ = [*_EXPORTS, "__version__"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
