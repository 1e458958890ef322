"""merging: task vectors, TIES, DARE, soups, SLERP, Model Stock, breadcrumbs and WIDEN on
one streaming engine, and evaluation-driven merges (greedy soup, lambda search, aTLAS), all
entries of one table of methods (`merging.methods`).

    merging.merge("ties", base="llama", models=["ft-a", "ft-b"], density=0.5)
    merging.greedy_soup(catalog, ["ft-a", "ft-b", "ft-c"], task="digits")

`merging.operators` registers the `merge.*` operators (the registry imports it through
the plugin). Importing the package itself is light (the `zoo` CLI imports it for its
commands), so the API is loaded on first use.
"""
from __future__ import annotations

from zoo.lazy import lazy_exports

_EXPORTS = {
    "merge": "merging.api", "run_merge": "merging.api",
    "MergeMethod": "merging.methods", "get_method": "merging.methods", "all_methods": "merging.methods",
    "method_names": "merging.methods.names",
    "greedy_soup": "merging.methods.greedy_soup", "lambda_search": "merging.methods.lambda_search",
    "atlas": "merging.methods.atlas",
}
__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
