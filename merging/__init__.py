"""merging: task vectors, TIES, DARE, soups, SLERP, Model Stock, breadcrumbs and WIDEN on
one streaming engine, and evaluation-driven merges (greedy soup, lambda search, aTLAS).
Importing registers the `merge.*` operators."""
from . import evaluated  # noqa: F401  (registers merge.greedy_soup, merge.lambda_search, merge.atlas)
from .methods import METHODS, MergeMethod, get_method
from .operator import merge, run_merge

__all__ = ["METHODS", "MergeMethod", "get_method", "merge", "run_merge"]
