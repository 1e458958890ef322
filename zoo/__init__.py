"""weightzoo core: checkpoint I/O, the catalog with provenance, and the operator registry.

    from zoo import Catalog, Checkpoint
    cat = Catalog()                      # ./catalog.db, or $ZOO_CATALOG
    entry = cat.add("path/to/hf-folder").entry
    ckpt = cat.open(entry.ref)           # lazy, memory-mapped tensors
"""
from .catalog import AddResult, Catalog, ModelEntry, Parent, RunRecord
from .checkpoint import Checkpoint
from .errors import ZooError
from .writer import CheckpointWriter, TensorSpec, save_tensors

__version__ = "0.1.0"
__all__ = ["AddResult", "Catalog", "Checkpoint", "CheckpointWriter", "ModelEntry", "Parent", "RunRecord",
           "TensorSpec", "ZooError", "save_tensors", "__version__"]
