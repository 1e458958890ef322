"""`zoo merge`: from a mergekit YAML file or from flags to a registered merged model."""
from __future__ import annotations

from typing import Any, Sequence

from zoo.catalog import Catalog
from zoo.console import parse_assignments
from zoo.errors import ZooError

from . import mergekit_config
from .methods import get_method
from .operator import run_merge


def parse_sets(sets: Sequence[str]) -> dict[str, Any]:
    """--set KEY=VALUE flags -> method parameters."""
    return parse_assignments(list(sets), "--set")


def merge_command(catalog: Catalog, config: str | None, method: str | None, base: str | None,
                  models: Sequence[str], weights: Sequence[float], sets: Sequence[str], *, dtype: str | None,
                  out_dtype: str | None, out: str | None, device: str, seed: int, workers: int, reuse: bool,
                  tags: Sequence[str], progress_factory) -> Any:
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
