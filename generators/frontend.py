"""Command-line front ends of the generators package (`zoo expand`)."""
from __future__ import annotations

from zoo.catalog import Catalog, Parent
from zoo.runner import RunResult, run_operator


def expand_command(catalog: Catalog, ref: str, method: str, *, hidden_size: int | None, num_layers: int | None,
                   num_heads: int | None, intermediate_size: int | None, seed: int, out: str | None,
                   tags, reuse: bool, progress_factory) -> RunResult:
    params = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
              "intermediate_size": intermediate_size, "seed": seed}
    source = catalog.get(ref)
    with progress_factory("expanding") as advance:
        return run_operator(catalog, f"expand.{method}", [Parent(source.id, "source")], params, out, tags=tags,
                            reuse=reuse, progress=advance)
