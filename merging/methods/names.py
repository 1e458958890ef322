"""The index of the merge-method table: each method's name, kind and module, in the order
help lists them.

Light on purpose (no torch): `zoo merge --help` reads the names from here, and a method's
module (which registers its entry, `merging.methods.register`) is imported on first use.
Adding a method: write its module in this folder and add its line here.
"""
from __future__ import annotations

STREAMING = "streaming"  # per-tensor math streamed by the engine
EVALUATED = "evaluated"  # candidates scored on a task, the chosen one written

# name -> (kind, module under merging/methods/)
INDEX: dict[str, tuple[str, str]] = {
    "linear": (STREAMING, "linear"),
    "task_arithmetic": (STREAMING, "task_arithmetic"),
    "ties": (STREAMING, "ties"),
    "dare_linear": (STREAMING, "dare"),
    "dare_ties": (STREAMING, "dare"),
    "breadcrumbs": (STREAMING, "breadcrumbs"),
    "breadcrumbs_ties": (STREAMING, "breadcrumbs"),
    "della": (STREAMING, "della"),
    "della_linear": (STREAMING, "della"),
    "sce": (STREAMING, "sce"),
    "ram": (STREAMING, "ram"),
    "ramplus_tl": (STREAMING, "ram"),
    "slerp": (STREAMING, "slerp"),
    "model_stock": (STREAMING, "model_stock"),
    "widen": (STREAMING, "widen"),
    "nuslerp": (STREAMING, "nuslerp"),
    "multislerp": (STREAMING, "multislerp"),
    "karcher": (STREAMING, "karcher"),
    "nearswap": (STREAMING, "nearswap"),
    "arcee_fusion": (STREAMING, "arcee_fusion"),
    "passthrough": (STREAMING, "passthrough"),
    "greedy_soup": (EVALUATED, "greedy_soup"),
    "lambda_search": (EVALUATED, "lambda_search"),
    "atlas": (EVALUATED, "atlas"),
}


def method_names(kind: str | None = None) -> list[str]:
    """Every method's name (or those of one kind), in table order."""
    return [name for name, (k, _) in INDEX.items() if kind is None or k == kind]


def kind_of(name: str) -> str | None:
    """'streaming', 'evaluated', or None for a name not in the table."""
    entry = INDEX.get(name)
    return entry[0] if entry else None
