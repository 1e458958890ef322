"""`zoo merge`: from a mergekit YAML file or from flags to a registered merged model. The
method is looked up in the table (merging.methods): a streaming one takes per-model
weights and settings, an evaluation-driven one its inputs and its settings from --set."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
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


@dataclass
class PipelineResult:
    """A multi-document config's runs, in the order they ran: (document name, result)."""

    steps: list[tuple[str | None, Any]] = field(default_factory=list)

    @property
    def entry(self):
        return self.steps[-1][1].entry

    @property
    def reused(self) -> bool:
        return all(r.reused for _, r in self.steps)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for _, r in self.steps)


def shard_size(text: str | None) -> str | None:
    """--out-shard-size: mergekit's form (a count with K, M or B for thousand, million,
    billion: bytes per shard, as mergekit's writer counts them) or ours (500MB, 2GiB)."""
    if text is None:
        return None
    s = text.strip()
    m = re.fullmatch(r"(\d+)([kKmMbB]?)", s)
    if m:
        size = int(m.group(1)) * {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}[m.group(2).lower()]
        if size <= 0:
            raise ZooError(f"--out-shard-size {text!r}: must be more than 0 bytes")
        return str(size)
    from zoo.writer import parse_size

    try:
        size = parse_size(s)
    except ZooError:
        raise ZooError(f"--out-shard-size {text!r}: not a size (e.g. 5B or 500M as in mergekit, or 2GB, 500MiB)") from None
    if size <= 0:
        raise ZooError(f"--out-shard-size {text!r}: must be more than 0 bytes")
    return s


def merge_command(catalog: Catalog, config: str | None, method: str | None, base: str | None,
                  models: Sequence[str], weights: Sequence[float], sets: Sequence[str], *, dtype: str | None,
                  out_dtype: str | None, out: str | None, device: str, seed: int, workers: int, reuse: bool,
                  tags: Sequence[str], progress_factory, out_shard_size: str | None = None,
                  documents: list | None = None) -> Any:
    """`documents`: the config's documents when the caller has read them already."""
    if workers < 1:
        raise ZooError(f"--workers {workers} is out of range: must be >= 1 (tensors merged at once)")
    shard = shard_size(out_shard_size)
    run_extra = {"max_shard_size": shard} if shard else {}
    if method and kind_of(method.replace("-", "_")) == EVALUATED:
        if config or weights or dtype or out_dtype:
            raise ZooError(f"{method}: give the models with --model (and --base) and its settings with --set "
                           "(e.g. task=digits); it writes the inputs' dtype")
        return _evaluated(catalog, method.replace("-", "_"), base, models, parse_sets(sets), out=out, device=device,
                          reuse=reuse, tags=tags, progress_factory=progress_factory)
    if config:
        if method or models or base:
            raise ZooError("give either a YAML config or --method/--base/--model flags, not both")
        docs = documents if documents is not None else mergekit_config.load_documents(config)
        if len(docs) > 1:
            return _pipeline(catalog, docs, config, parse_sets(sets), dtype=dtype, out_dtype=out_dtype, out=out,
                             device=device, seed=seed, workers=workers, reuse=reuse, tags=tags,
                             progress_factory=progress_factory, run_extra=run_extra)
        cfg = docs[0]
        if cfg.slices is not None:
            return _run_doc(catalog, cfg, parse_sets(sets), dtype=dtype, out_dtype=out_dtype, out=out or cfg.name,
                            device=device, seed=seed, workers=workers, reuse=reuse, tags=tags,
                            progress_factory=progress_factory, run_extra=run_extra)
        method, base, items, parameters = cfg.method, cfg.base, cfg.models, cfg.parameters
        parameters.update(parse_sets(sets))
        dtype, out_dtype = dtype or cfg.dtype, out_dtype or cfg.out_dtype
        out = out or cfg.name
        run_extra = {**run_extra, **cfg.run_settings()}  # tokenizer, chat_template
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
                         progress=advance, seed=seed, **run_extra)


def _run_doc(catalog: Catalog, cfg, sets: dict, *, dtype, out_dtype, out, device, seed, workers, reuse, tags,
             progress_factory, run_extra: dict) -> Any:
    """One mergekit document (models or slices) as one run."""
    parameters = {**cfg.parameters, **sets}
    dtype, out_dtype = dtype or cfg.dtype, out_dtype or cfg.out_dtype
    if cfg.slices is not None:
        from .slices import merge_slices

        with progress_factory("merging") as advance:
            return merge_slices(catalog, cfg.method, cfg.base, cfg.slices, parameters=parameters, dtype=dtype,
                                out_dtype=out_dtype, out=out, tags=tags, reuse=reuse, device=device, workers=workers,
                                progress=advance, seed=seed, **run_extra)
    if kind_of(cfg.method) == EVALUATED:
        raise ZooError(f"{cfg.method} is an evaluation-driven merge: run it with zoo merge --method {cfg.method}")
    merge_method = get_method(cfg.method, STREAMING)
    if not cfg.models:
        raise ZooError(f"{merge_method.name}: no models to merge")
    with progress_factory("merging") as advance:
        return run_merge(catalog, merge_method.name, cfg.base, cfg.models, parameters=parameters, dtype=dtype,
                         out_dtype=out_dtype, out=out, tags=tags, reuse=reuse, device=device, workers=workers,
                         progress=advance, seed=seed, **run_extra, **cfg.run_settings())


def _pipeline(catalog: Catalog, docs: list, config: str, sets: dict, *, out, progress_factory, **kw) -> PipelineResult:
    """mergekit-multi: the documents of one file as a small pipeline. Each named document is
    registered under its name, and a later document naming it merges that entry (the one
    this run made, whatever else has the name); the unnamed one (at most one) is the final
    result, registered as --out. They run in dependency order (ties: file order). Every
    document is read and checked first (keys, names, methods, dependencies), so such a
    mistake in the last runs nothing; a document that fails when it runs (an input's
    shapes) leaves the entries of the documents before it, each a complete merge."""
    from zoo.catalog.catalog import check_name

    names = [d.name for d in docs if d.name]
    for n in names:
        check_name(n)
    unnamed = [d for d in docs if not d.name]
    if out and not unnamed:
        raise ZooError(f"{config}: every document has a name:; --out names only an unnamed (final) document")
    for d in docs:
        for ref in d.refs():
            if ref == d.name:
                raise ZooError(f"{config}: document {d.name!r} uses itself as an input")
    for d in docs:  # methods known and streaming, before anything runs
        if kind_of(d.method) == EVALUATED:
            raise ZooError(f"{config}: document {d.name or '(unnamed)'}: {d.method} is an evaluation-driven merge, "
                           "not for a merge config")
        get_method(d.method, STREAMING)
    order, done = [], set()
    pending = list(docs)
    while pending:
        ready = [d for d in pending if not any(r in names and r not in done and r != d.name for r in d.refs())]
        if not ready:
            raise ZooError(f"{config}: the documents {', '.join(repr(d.name) for d in pending)} depend on each other "
                           "in a cycle")
        order.append(ready[0])
        done.add(ready[0].name)
        pending.remove(ready[0])
    made: dict[str, str] = {}
    result = PipelineResult()
    for d in order:
        cfg = d.renamed(made)
        res = _run_doc(catalog, cfg, sets, out=d.name or out, progress_factory=progress_factory, **kw)
        if d.name:
            made[d.name] = res.entry.id  # this run's entry, by id
        result.steps.append((d.name, res))
    return result


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
