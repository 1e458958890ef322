"""merging: task vectors, TIES, DARE, soups, SLERP, Model Stock, breadcrumbs and WIDEN on
one streaming engine. Importing registers the `merge.*` operators."""
from .methods import METHODS, MergeMethod, get_method
from .operator import merge, run_merge

__all__ = ["METHODS", "MergeMethod", "get_method", "merge", "run_merge"]
