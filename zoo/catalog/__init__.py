"""The catalog: models, files, tags, runs and lineage in any SQLAlchemy database."""
from .catalog import AddResult, Catalog, Parent, RunRecord, VerifyResult
from .tables import LineageEdge, ModelEntry, ModelFile, ModelTag, Run

__all__ = ["AddResult", "Catalog", "Parent", "RunRecord", "VerifyResult", "LineageEdge", "ModelEntry",
           "ModelFile", "ModelTag", "Run"]
