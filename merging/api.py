"""The Python API: `merge()` and `run_merge()` for streaming methods, `run_evaluated()` for
the evaluation-driven ones (each has its own function: merging.greedy_soup, ...), and
catalog references resolved to operator inputs. The operators themselves are registered
by merging.operators and found through the registry.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Sequence

from zoo.catalog import Catalog, Parent
from zoo.checkpoint import Checkpoint
from zoo.errors import NotFoundError, ZooError
from zoo.runner import RunResult, run_operator

from .lora import ADAPTER_ROLE, split_ref
from .methods import STREAMING, MergeMethod, get_method
from .spec import MergeParams
from .tokenizer.forms import bind as bind_tokenizer


# settings of the merge run itself, not of the method (given with --set or `parameters:` too)
RUN_FIELDS = frozenset(MergeParams.model_fields) - {"parameters", "model_parameters", "dtype", "out_dtype"}


def resolve_input(catalog: Catalog, ref: str | int) -> str | int:
    """A catalog entry's id, or a path (absolute) that the runner hashes and registers in the
    same transaction as the merge's output: a merge that fails adds no row."""
    try:
        return catalog.get(ref).id
    except NotFoundError:
        if isinstance(ref, str) and Path(ref).expanduser().exists():
            return str(Path(ref).expanduser().resolve())
        raise


def resolve_pair(catalog: Catalog, ref: str | int) -> tuple[str | int, str | int | None]:
    """A model reference, or 'MODEL+ADAPTER' (a LoRA adapter applied on the fly): (model, adapter or None)."""
    model, adapter = split_ref(catalog, ref)
    return resolve_input(catalog, model), (resolve_input(catalog, adapter) if adapter is not None else None)


def adapter_parents(adapter: str | int | None) -> list[Parent]:
    """The `adapter` input that follows the model it modifies (none without one)."""
    return [Parent(adapter, ADAPTER_ROLE)] if adapter is not None else []


def build_inputs(catalog: Catalog, method: MergeMethod, base: str | int | None,
                 models: Sequence[tuple[str | int, dict]]) -> tuple[list[Parent], list[dict]]:
    """Parents (base first, role 'base'; others 'input' with their scalar weight) and the
    per-model parameter list, in the same order as the non-base parents."""
    parents: list[Parent] = []
    per_model: list[dict] = []
    base_id, base_adapter = resolve_pair(catalog, base) if base is not None else (None, None)
    if base_id is not None:
        parents.append(Parent(base_id, "base"))
        parents += adapter_parents(base_adapter)
    for ref, params in models:
        mid, adapter = resolve_pair(catalog, ref)
        if (method.needs_base or method.optional_base) and (mid, adapter) == (base_id, base_adapter):  # mergekit lists the base among models
            continue
        weight = params.get("weight")
        parents.append(Parent(mid, "input", float(weight) if isinstance(weight, (int, float)) else None))
        parents += adapter_parents(adapter)
        per_model.append(dict(params))
    if base_id is not None and not (method.needs_base or method.optional_base):
        # as mergekit: a method without a base (linear) takes a base_model listed among the
        # models as that model, and adds one not listed as one more input (with only the
        # merge-wide parameters: see base_as_input)
        head = 1 + len(adapter_parents(base_adapter))  # the base and its adapter, if any
        listed = [(p.ref, parents[i + 1].ref if i + 1 < len(parents) and parents[i + 1].role == ADAPTER_ROLE else None)
                  for i, p in enumerate(parents) if i >= head and p.role == "input"]
        if (base_id, base_adapter) in listed:
            del parents[:head]
        else:
            parents[0] = Parent(base_id, "input", None)
            per_model.insert(0, {})
    return parents, per_model


def base_as_input(method: MergeMethod, base, models: Sequence[tuple[str | int, dict]], parameters: dict,
                  catalog: Catalog) -> None:
    """mergekit adds a base_model that is not among the models as one more input of a method
    without a base, with no per-model parameters of its own: linear then has no weight for
    it and refuses ("Missing required parameter weight"), unless a merge-wide weight is
    given. The same here, before any work (the table's default weight of 1.0 is for models
    listed without one, not for a base added silently)."""
    if base is None or method.needs_base or method.optional_base or "weight" not in method.model_params or "weight" in parameters:
        return
    base_id = resolve_pair(catalog, base)
    if any(resolve_pair(catalog, ref) == base_id for ref, _ in models):
        return
    raise ZooError(f"{method.name}: base_model {base} is not among the models; mergekit adds it as one more input, "
                   "which needs a weight: list it under models: with a weight, give a merge-wide weight, or leave "
                   "base_model out")


def run_merge(catalog: Catalog, method_name: str, base, models, *, parameters: dict | None = None,
              dtype: str | None = None, out_dtype: str | None = None, out: str | None = None,
              tags: Sequence[str] = (), reuse: bool = True, device: str = "cpu", workers: int = 2,
              progress=None, **extra: Any) -> RunResult:
    method = get_method(method_name, STREAMING)
    if method.needs_base and base is None:  # the runner would say it too; this names the flag and the YAML key
        raise ZooError(f"{method.name} needs a base model (--base REF, or base_model: in the YAML)")
    base_as_input(method, base, models, parameters or {}, catalog)
    parents, per_model = build_inputs(catalog, method, base, models)
    has_model_params = any(per_model)
    parameters = dict(parameters or {})
    lifted = {k: parameters.pop(k) for k in list(parameters) if k in RUN_FIELDS}  # --set copy_unmatched=true
    params = {"parameters": parameters, "model_parameters": per_model if has_model_params else [],
              "dtype": dtype, "out_dtype": out_dtype, **extra, **lifted}
    if params.get("tokenizer") is not None:  # model references -> positions among the merge's models
        params["tokenizer"] = bind_tokenizer(params["tokenizer"], parents, base, models, partial(resolve_pair, catalog))
    return run_operator(catalog, f"merge.{method.name}", parents, params, out, tags=tags, reuse=reuse,
                        progress=progress, options={"device": device, "workers": workers})


def merge(method: str, base: str | int | None = None, models: Sequence = (), *, catalog: Catalog | None = None,
          out: str | None = None, weights: Sequence[float] | None = None, dtype: str | None = None,
          out_dtype: str | None = None, device: str = "cpu", tags: Sequence[str] = (), reuse: bool = True,
          **parameters: Any) -> Checkpoint:
    """Merge catalog models (refs or paths) and register the result.

    merge("ties", base="llama", models=["ft-a", "ft-b"], weights=[0.5, 0.5], density=0.5)

    `models` items are refs or (ref, {per-model params}); keyword parameters are the
    method's shared settings. Returns the output checkpoint; `.entry` is its catalog row.
    """
    catalog = catalog or Catalog()
    items = [m if isinstance(m, tuple) else (m, {}) for m in models]
    if weights is not None:
        if len(weights) != len(items):
            raise ZooError(f"{len(weights)} weights for {len(items)} models")
        items = [(ref, {**p, "weight": w}) for (ref, p), w in zip(items, weights)]
    extra = {k: parameters.pop(k) for k in list(parameters) if k in RUN_FIELDS}
    result = run_merge(catalog, method, base, items, parameters=parameters, dtype=dtype, out_dtype=out_dtype,
                       out=out, tags=tags, reuse=reuse, device=device, **extra)
    return _opened(catalog, result)


def evaluated_parents(catalog: Catalog, base: str | int | None, models: Sequence[str | int]) -> list[Parent]:
    """An evaluated merge's inputs: the base (role 'base') if given, then the candidates."""
    if not models:
        raise ZooError("no fine-tuned models given")
    head = [Parent(resolve_input(catalog, base), "base")] if base is not None else []
    return head + [Parent(resolve_input(catalog, r), "input") for r in models]


def run_evaluated(catalog: Catalog, name: str, base: str | int | None, models: Sequence[str | int], params: dict,
                  *, out: str | None, tags: Sequence[str], reuse: bool, device: str) -> tuple[Checkpoint, dict]:
    """Run `merge.<name>`; (the output checkpoint, the search report kept with the run)."""
    result = run_operator(catalog, f"merge.{name}", evaluated_parents(catalog, base, models), params, out, tags=tags,
                          reuse=reuse, options={"device": device})
    return _opened(catalog, result), search_report(catalog, result.entry)


def search_report(catalog: Catalog, entry) -> dict:
    """The report an evaluated merge kept with the run that made `entry` ({} for other runs)."""
    run = catalog.producing_run(entry)
    return (((run.timings or {}).get("notes") or {}).get("evaluated_merge") or {}) if run else {}


def _opened(catalog: Catalog, result: RunResult) -> Checkpoint:
    """The run's output, opened, with `.entry` (its catalog row) and `.reused` set."""
    ckpt = catalog.open(result.entry)
    ckpt.entry, ckpt.reused = result.entry, result.reused
    return ckpt
