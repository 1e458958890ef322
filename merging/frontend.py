"""`zoo merge`: from a mergekit YAML file or from flags to a registered merged model. The
method is looked up in the table (merging.methods): a streaming one takes per-model
weights and settings, an evaluation-driven one its inputs and its settings from --set."""
from __future__ import annotations

from typing import Any, Sequence

from zoo.catalog import Catalog
from zoo.console import parse_assignments
from zoo.errors import ZooError
from zoo.runner import run_operator

from . import mergekit_config
from .api import evaluated_parents, run_merge, search_report
from .methods import EVALUATED, STREAMING, get_method, kind_of


def parse_sets(sets: Sequence[str]) -> dict[str, Any]:
    """--set KEY=VALUE flags -> method parameters."""
    return parse_assignments(list(sets), "--set")


def merge_command(catalog: Catalog, config: str | None, method: str | None, base: str | None,
                  models: Sequence[str], weights: Sequence[float], sets: Sequence[str], *, dtype: str | None,
                  out_dtype: str | None, out: str | None, device: str, seed: int, workers: int, reuse: bool,
                  tags: Sequence[str], progress_factory) -> Any:
    if workers < 1:
        raise ZooError(f"--workers {workers} is out of range: must be >= 1 (tensors merged at once)")
    if method and kind_of(method.replace("-", "_")) == EVALUATED:
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
    merge_method = get_method(method, STREAMING)
    if not items:
        raise ZooError(f"{merge_method.name}: no models to merge")
    with progress_factory("merging") as advance:
        return run_merge(catalog, merge_method.name, base, items, parameters=parameters, dtype=dtype,
                         out_dtype=out_dtype, out=out, tags=tags, reuse=reuse, device=device, workers=workers,
                         progress=advance, seed=seed)


def _evaluated(catalog: Catalog, name: str, base: str | None, models: Sequence[str], params: dict, *, out, device,
               reuse, tags, progress_factory) -> Any:
    method = get_method(name)
    if not models:
        raise ZooError(f"{name}: no models (give --model for each candidate / fine-tune)")
    if base and not method.needs_base:
        raise ZooError(f"{name} merges its --model inputs and takes no --base")
    if method.needs_base and not base:
        raise ZooError(f"{name} needs the pretrained model as --base")
    with progress_factory(name.replace("_", " ")) as advance:
        return run_operator(catalog, f"merge.{name}", evaluated_parents(catalog, base, models), params, out,
                            tags=tags, reuse=reuse, progress=advance, options={"device": device})


def search_summary(catalog: Catalog, entry) -> str:
    """What an evaluation-driven merge chose, in one line ('' for other merges)."""
    report = search_report(catalog, entry)
    name = report.get("method")
    return get_method(name).describe(report) if kind_of(name) == EVALUATED else ""
