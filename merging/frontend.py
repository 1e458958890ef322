"""`zoo merge`: from a mergekit YAML file or from flags to a registered merged model; the
evaluation-driven methods (greedy_soup, lambda_search, atlas) take their settings from --set."""
from __future__ import annotations

from typing import Any, Sequence

from zoo.catalog import Catalog
from zoo.console import parse_assignments
from zoo.errors import ZooError

from . import mergekit_config
from .methods import get_method
from .operator import resolve_input, run_merge

EVALUATED = ("greedy_soup", "lambda_search", "atlas")  # search-based: `merge.<name>` operators of their own


def parse_sets(sets: Sequence[str]) -> dict[str, Any]:
    """--set KEY=VALUE flags -> method parameters."""
    return parse_assignments(list(sets), "--set")


def merge_command(catalog: Catalog, config: str | None, method: str | None, base: str | None,
                  models: Sequence[str], weights: Sequence[float], sets: Sequence[str], *, dtype: str | None,
                  out_dtype: str | None, out: str | None, device: str, seed: int, workers: int, reuse: bool,
                  tags: Sequence[str], progress_factory) -> Any:
    if method and method.replace("-", "_") in EVALUATED:
        if config or weights or dtype or out_dtype:
            raise ZooError(f"{method}: give the models with --model (and --base) and its settings with --set "
                           "(e.g. task=digits); it writes the inputs' dtype")
        return _evaluated(catalog, method.replace("-", "_"), base, models, parse_sets(sets), out=out, device=device,
                          reuse=reuse, tags=tags, progress_factory=progress_factory)
    if config:
        if method or models or base:
            raise ZooError("give either a YAML config or --method/--base/--model flags, not both")
        cfg = mergekit_config.load(config)
        method, base, items, parameters = cfg.method, cfg.base, cfg.models, cfg.parameters
        parameters.update(parse_sets(sets))
        dtype, out_dtype = dtype or cfg.dtype, out_dtype or cfg.out_dtype
        out = out or cfg.name
    else:
        if not method:
            raise ZooError("say what to merge: a CONFIG.yaml, or --method with --model (and --base)")
        if weights and len(weights) != len(models):
            raise ZooError(f"{len(weights)} --weight values for {len(models)} --model inputs (give one per model)")
        items = [(m, {"weight": w} if weights else {}) for m, w in zip(models, weights or [None] * len(models))]
        parameters = parse_sets(sets)
    merge_method = get_method(method)
    if not items:
        raise ZooError(f"{merge_method.name}: no models to merge")
    with progress_factory("merging") as advance:
        return run_merge(catalog, merge_method.name, base, items, parameters=parameters, dtype=dtype,
                         out_dtype=out_dtype, out=out, tags=tags, reuse=reuse, device=device, workers=workers,
                         progress=advance, seed=seed)


def _evaluated(catalog: Catalog, method: str, base: str | None, models: Sequence[str], params: dict, *, out, device,
               reuse, tags, progress_factory) -> Any:
    from zoo.catalog import Parent
    from zoo.runner import run_operator

    if not models:
        raise ZooError(f"{method}: no models (give --model for each candidate / fine-tune)")
    if method == "greedy_soup" and base:
        raise ZooError("greedy_soup averages its --model inputs and takes no --base")
    if method != "greedy_soup" and not base:
        raise ZooError(f"{method} needs the pretrained model as --base")
    parents = ([Parent(resolve_input(catalog, base), "base")] if base else []) + [
        Parent(resolve_input(catalog, m), "input") for m in models]
    with progress_factory(method.replace("_", " ")) as advance:
        return run_operator(catalog, f"merge.{method}", parents, params, out, tags=tags, reuse=reuse,
                            progress=advance, options={"device": device})


def search_summary(catalog: Catalog, entry) -> str:
    """What an evaluation-driven merge chose, in one line ('' for other merges)."""
    from .evaluated import summary

    run = catalog.producing_run(entry)
    return summary(((run.timings or {}).get("notes") or {}).get("evaluated_merge") or {}) if run else ""
