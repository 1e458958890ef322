"""mergekit's `slices:`: an output model assembled from layer ranges of several models, each
output slice merged with the merge method over its sources (frankenmerges, depth
up-scaling: a 6-layer model from two 4-layer ones, a 44-layer one from two 32-layer ones).

The operator `merge.slices` takes the distinct models the slices name (the document's
`base_model` with role `base`, the others `input`) and its params say, slice by slice,
which input (by position) gives which layers; the run's record therefore holds every
source with its layer range, and the lineage one edge per model.

Semantics are mergekit 0.1.5's (mergekit/plan.py):
- output layers are numbered in slice order; the config's depth is the sum of the slices'
  lengths;
- tensors outside the layer stack: those before it (embeddings) merge over the first
  slice's sources with its settings, those after it (final norm, head) over the last
  slice's sources (no more of them than the first slice has) with its settings, at t = 0;
- inside a slice of n layers, layer i sits at t = i/(n-1) (t = 1 for one layer) for
  gradients;
- a setting is looked up in the source's parameters (per-model settings only), then the
  slice's, then the document's; a value that does not resolve (no filter matches) falls
  through to the next;
- the slice's base_model (else the document's) must be one of its sources for methods that
  take a base; methods without one ignore it;
- per-model settings of a source are resolved against the source's own tensor name (its
  layer index), merge-wide ones against the output's.
Every slice is merged tensor by tensor, like whole-model merges (merging.engine).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from zoo.checkpoint import WEIGHT_INDEXES, Checkpoint
from zoo.devices import resolve_devices, workers_for
from zoo.errors import MismatchError, ZooError
from zoo.families import detect, is_token_embedding, num_layers
from zoo.families.base import GENERIC, Family
from zoo.param_types import CheckedParams, custom
from zoo.registry import InputSpec, Operator
from zoo.runner import OperatorCall, OperatorOutput
from zoo.writer import TensorSpec

from .engine import precision, rounded_source
from .job import TensorJob
from .lora import ADAPTER_ROLE, adapted_inputs
from .mergekit_export import extra_files
from .methods import STREAMING, get_method
from .settings import resolve_scoped, settings_check
from .spec import MergeParams

OPERATOR = "merge.slices"
_NOT_SIDE_FILES = WEIGHT_INDEXES | {"config.json", "README.md", "mergekit_config.yml"}
# per-layer lists some configs carry (one entry per layer): rebuilt for the new layer stack
PER_LAYER_KEYS = ("layer_types",)


class SliceSourceSpec(CheckedParams):
    """Layers [a, b) of input number `input` (its position among the run's inputs)."""

    model_config = {"extra": "forbid", "frozen": True}
    input: int = Field(ge=0, description="position of the model among the run's model inputs (adapters not counted)")
    layer_range: tuple[int, int] = Field(description="[a, b): layers a to b-1 of that model")
    parameters: dict[str, Any] = Field(default_factory=dict, description="per-model settings for this source")


class SliceSpec(CheckedParams):
    model_config = {"extra": "forbid", "frozen": True}
    sources: list[SliceSourceSpec] = Field(min_length=1)
    base: int | None = Field(None, ge=0, description="position of the slice's base_model among the inputs "
                                                     "[default: the run's base]")
    parameters: dict[str, Any] = Field(default_factory=dict, description="settings for this slice")


class SlicesParams(MergeParams):
    """A slices merge: the method, the slices, and the merge-wide settings (`parameters`)."""

    model_config = {"json_schema_extra": {"examples": [  # a valid value, for tools that fill params from the schema
        {"method": "passthrough", "slices": [{"sources": [{"input": 0, "layer_range": [0, 1]}]}]}]}}
    method: str = Field(min_length=1, description="the merge method every slice is merged with")
    slices: list[SliceSpec] = Field(min_length=1, description="output slices, in order")
    mismatched_shapes: Literal["error"] = Field("error", description="tensors of different shapes: an error")
    copy_unmatched: Literal[False] = Field(False, description="tensors missing from a source: an error")

    @model_validator(mode="after")
    def _check(self) -> "SlicesParams":
        try:
            method = get_method(self.method, STREAMING)
        except ZooError as e:
            raise custom(str(e)) from None
        check = settings_check(method)
        if self.tokenizer is not None or self.chat_template is not None:
            raise custom("slices: tokenizer_source, tokenizer: and chat_template are supported with models: merges "
                         "only; merge the slices first, then the tokenizer with a models: document")
        if self.model_parameters:
            raise custom("slices: per-model settings go in each source's parameters, not model_parameters")
        check.shared(self.parameters)
        for i, s in enumerate(self.slices):
            where = f"slices[{i}]"
            check.shared(s.parameters)
            lengths = set()
            for j, src in enumerate(s.sources):
                a, b = src.layer_range
                if not 0 <= a < b:
                    raise custom(f"{where}.sources[{j}]: layer_range must be [a, b] with 0 <= a < b, not [{a}, {b}]")
                lengths.add(b - a)
                check.per_model([src.parameters])
            if len(lengths) > 1:
                raise custom(f"{where}: all inputs to a slice must contain the same number of layers "
                             f"(its sources span {' and '.join(map(str, sorted(lengths)))})")
            ids = [src.input for src in s.sources]
            if len(set(ids)) != len(ids):
                raise custom(f"{where}: the same model twice among its sources (duplicate merge inputs); "
                             "use two slices for two ranges of one model")
        return self


def slice_base(params: SlicesParams, s: SliceSpec, run_base: int | None) -> int | None:
    return s.base if s.base is not None else run_base


def check_structure(method, params: SlicesParams, n_inputs: int, run_base: int | None) -> None:
    """mergekit's per-slice contract: input positions exist, the base (the slice's, else the
    run's) is among the sources of a method that takes one, and each slice has as many
    models as the method takes."""
    for i, s in enumerate(params.slices):
        where = f"slices[{i}]"
        for j, src in enumerate(s.sources):
            if src.input >= n_inputs:
                raise ZooError(f"{where}.sources[{j}]: input {src.input} does not exist ({n_inputs} inputs)")
        if s.base is not None and s.base >= n_inputs:
            raise ZooError(f"{where}: base input {s.base} does not exist ({n_inputs} inputs)")
        ids = [src.input for src in s.sources]
        base = slice_base(params, s, run_base)
        n = len(ids)
        if method.needs_base:
            if base is None:
                raise ZooError(f"{method.name} needs a base model: give base_model (for the document or the slice) "
                               f"and list it among the sources of {where}")
            if base not in ids:
                raise ZooError(f"{where}: its base model is not among its sources (mergekit: base input is not "
                               f"present in merge inputs); add it with the same layer_range length")
            n -= 1
        if n < method.min_models or (method.max_models is not None and n > method.max_models):
            most = "" if method.max_models is None else f" and at most {method.max_models}"
            raise ZooError(f"{where}: {method.name} takes at least {method.min_models}{most} model(s)"
                           f"{' besides the base' if method.needs_base else ''}; this slice has {n}")


@dataclass
class OutTensor:
    name: str
    spec: TensorSpec
    base: tuple[int, str] | None  # (input, tensor name)
    models: list[tuple[int, str]]
    model_scopes: list[list[dict]]  # per model: settings from highest to lowest precedence
    shared_scopes: list[dict]
    t: float
    merge: bool  # False: copied from the first source (integer tensors)


def _is_before_stack(name: str, family: Family | None) -> bool:
    """Outside the layer stack, before it: embeddings (token and position)."""
    return is_token_embedding(name, family) or "embed" in name or name.split(".")[-2:-1] in (["wpe"], ["wte"])


def plan(method, params: SlicesParams, cks: list[Checkpoint], run_base: int | None,
         out_override: str | None) -> tuple[list[OutTensor], dict, dict]:
    """(output tensors in order, output config, report) before any tensor is read."""
    fams = [detect(c.config, c.names()) for c in cks]
    depth = [num_layers(c.config, c.names(), f) for c, f in zip(cks, fams)]
    names_by_layer: list[dict[int, list[str]]] = []
    for c, f in zip(cks, fams):
        by: dict[int, list[str]] = {}
        for n in c.names():
            li = (f or GENERIC).layer_of(n)
            if li is not None:
                by.setdefault(li, []).append(n)
        names_by_layer.append(by)

    def info(i: int, name: str, what: str):
        if name not in cks[i].tensors:
            raise MismatchError(f"tensor {name} is missing from input {i + 1} ({cks[i].path.name}), needed for {what}; "
                                "slices need models of one architecture")
        return cks[i].info(name)

    out: list[OutTensor] = []
    slices = params.slices
    first, last = slices[0], slices[-1]
    head = cks[first.sources[0].input]
    fam = fams[first.sources[0].input]
    outside = [n for n in head.names() if (fam or GENERIC).layer_of(n) is None]

    def add(name: str, sources: list[tuple[int, str, dict]], base: int | None, scopes: list[dict], t: float,
            what: str) -> None:
        ref_i, ref_name, _ = sources[0]
        ref_info = info(ref_i, ref_name, what)
        base_src = None
        models = []
        model_scopes = []
        for i, tname, own in sources:
            inf = info(i, tname, what)
            if inf.shape != ref_info.shape:
                raise MismatchError(f"tensor {tname} has shape {list(inf.shape)} in input {i + 1} but {list(ref_info.shape)} "
                                    f"in input {ref_i + 1} ({what}); slices need models of one shape")
            if method.needs_base and i == base:
                base_src = (i, tname)
            else:
                models.append((i, tname))
                model_scopes.append([own, *scopes])
        if method.needs_base and base_src is None:
            raise ZooError(f"{what}: the base model is not among these sources; {method.name} needs it there")
        out_dtype = out_override if (ref_info.is_float and out_override) else ref_info.dtype
        out.append(OutTensor(name, TensorSpec(name, ref_info.shape, out_dtype), base_src, models, model_scopes,
                             scopes, t, ref_info.is_float))

    global_scope = params.parameters

    def sources_of(s: SliceSpec, limit: int | None = None) -> list[SliceSourceSpec]:
        return list(s.sources[:limit])

    before = [n for n in outside if _is_before_stack(n, fam)]
    after = [n for n in outside if n not in before]
    for n in before:
        add(n, [(src.input, n, src.parameters) for src in sources_of(first)], slice_base(params, first, run_base),
            [first.parameters, global_scope], 0.0, "the tensors before the layer stack (first slice)")
    layer = 0
    report_slices = []
    for si, s in enumerate(slices):
        a0, b0 = s.sources[0].layer_range
        length = b0 - a0
        for j, src in enumerate(s.sources):
            if src.layer_range[1] > depth[src.input]:
                raise ZooError(f"slices[{si}].sources[{j}]: layer_range [{src.layer_range[0]}, {src.layer_range[1]}] "
                               f"goes past the {depth[src.input]} layers of input {src.input + 1} "
                               f"({cks[src.input].path.name})")
        base = slice_base(params, s, run_base)
        report_slices.append({"output_layers": [layer, layer + length],
                              "sources": [{"input": src.input, "layer_range": list(src.layer_range)} for src in s.sources]})
        for k in range(length):
            t = k / (length - 1) if length > 1 else 1.0
            src0 = s.sources[0]
            f0 = fams[src0.input] or GENERIC
            for n in sorted(names_by_layer[src0.input].get(src0.layer_range[0] + k, [])):
                srcs = [(src.input, (fams[src.input] or GENERIC).rename_layer(n, src.layer_range[0] + k), src.parameters)
                        for src in s.sources]
                add(f0.rename_layer(n, layer), srcs, base, [s.parameters, global_scope], t,
                    f"slices[{si}], layer {src0.layer_range[0] + k}")
            layer += 1
    for n in after:
        add(n, [(src.input, n, src.parameters) for src in sources_of(last, len(first.sources))],
            slice_base(params, last, run_base), [last.parameters, global_scope], 0.0,
            "the tensors after the layer stack (last slice)")

    cfg_input = run_base if run_base is not None else first.sources[0].input
    config = dict(cks[cfg_input].config or {})
    cfg_fam = fams[cfg_input] or GENERIC
    set_depth = False
    for key in cfg_fam.depth_keys:
        if key in config:
            config[key] = layer
            set_depth = True
            break
    if not set_depth and config:
        config[cfg_fam.depth_keys[0]] = layer
    for key in PER_LAYER_KEYS:  # one entry per output layer, taken from the layer's source
        if isinstance(config.get(key), list):
            rebuilt = []
            for s in slices:
                src = s.sources[0]
                values = (cks[src.input].config or {}).get(key)
                for k in range(src.layer_range[1] - src.layer_range[0]):
                    li = src.layer_range[0] + k
                    rebuilt.append(values[li] if isinstance(values, list) and li < len(values) else config[key][0])
            config[key] = rebuilt
    if out_override and config:
        for key in ("torch_dtype", "dtype"):
            if key in config:
                config[key] = out_override
    return out, config, {"slices": report_slices, "num_layers": layer}


def run_slices(call: OperatorCall) -> OperatorOutput:
    params: SlicesParams = call.params
    method = get_method(params.method, STREAMING)
    adapted = adapted_inputs(call)  # the model inputs, each with its LoRA adapter applied on the fly
    roles = [role for role, _ in adapted]
    run_base = roles.index("base") if "base" in roles else None
    check_structure(method, params, len(adapted), run_base)
    cks = [ckpt for _, ckpt in adapted]
    compute, rounded, out_override = precision(params)
    tensors, config, report = plan(method, params, cks, run_base, out_override)
    # every tensor's settings resolved (and required ones present) before anything is written
    jobs_params = []
    for ot in tensors:
        per_model = [resolve_scoped(sc, method.model_params, mn, ot.t, method.name)
                     for sc, (_, mn) in zip(ot.model_scopes, ot.models)]
        shared = resolve_scoped(ot.shared_scopes, method.shared_params, ot.name, ot.t, method.name)
        if ot.merge and getattr(method, "check", None) is not None:
            problem = method.check(per_model, shared, ot.name)
            if problem:
                raise ZooError(f"{method.name}: {problem}")
        jobs_params.append((per_model, shared))
    cfg_input = run_base if run_base is not None else params.slices[0].sources[0].input
    ref = cks[cfg_input]
    side = {rel: ref.root / rel for rel in ref.side_files if rel not in _NOT_SIDE_FILES}
    writer = call.writer([ot.spec for ot in tensors], config=config or None, side_files=side,
                         max_shard_size=params.max_shard_size, extra_files=extra_files(call))
    devices = resolve_devices(call.options.get("device", "cpu"))
    workers = workers_for(devices, call.options.get("workers", 2))
    progress = call.progress
    if progress is not None and hasattr(progress, "set_total"):
        progress.set_total(len(tensors))

    def source(i: int, name: str):
        return rounded_source(lambda s, c: cks[i].read(name, s, c), rounded)

    def work(item) -> None:
        index, (ot, (per_model, shared)) = item
        if not ot.merge:
            i, n = ot.base or ot.models[0]
            writer.write_slice(ot.name, 0, cks[i].read(n))
        else:
            job = TensorJob(name=ot.name, shape=tuple(ot.spec.shape),
                            base=source(*ot.base) if ot.base is not None else None,
                            models=[source(i, n) for i, n in ot.models], params=per_model, shared=shared,
                            seed=params.seed, device=devices[index % len(devices)], dtype=compute,
                            family=detect(ref.config, ref.names()))
            method.run(job, lambda start, chunk: writer.write_slice(ot.name, start, chunk))
        if progress is not None:
            progress(1)

    with writer:
        if workers <= 1:
            for item in enumerate(zip(tensors, jobs_params)):
                work(item)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(work, enumerate(zip(tensors, jobs_params))):
                    pass
    refs = model_refs(call)
    for s in report["slices"]:
        for src in s["sources"]:
            src["model"] = refs[src["input"]]
    return OperatorOutput(writer.result, notes=report)


OPERATOR_DEF = Operator(
    OPERATOR, "1", SlicesParams, run_slices,
    "mergekit's slices: layer ranges of several models, each output slice merged with a method "
    "(frankenmerges, depth up-scaling)", relation="merge",
    inputs=(InputSpec("base", 0, 1), InputSpec("input", 0, None), InputSpec(ADAPTER_ROLE, 0, None)),
)


def model_refs(call: OperatorCall) -> list[str]:
    """The label of each model input, in order: its ref, or 'MODEL+ADAPTER' when an adapter
    follows it."""
    out: list[str] = []
    for parent, entry in call.inputs:
        if parent.role == ADAPTER_ROLE:
            out[-1] = f"{out[-1]}+{entry.ref}"
        else:
            out.append(entry.ref)
    return out


def merge_slices(catalog, method_name: str, base, slices, *, parameters: dict | None = None,
                 dtype: str | None = None, out_dtype: str | None = None, out: str | None = None, tags=(),
                 reuse: bool = True, device: str = "cpu", workers: int = 2, progress=None, **extra: Any):
    """Run `merge.slices`: `slices` are mergekit_config.SliceDef (sources with model refs and
    layer ranges, base, parameters); `base` the document's base_model. The distinct models
    become the run's inputs (the base first, role `base`), the slices refer to them by position
    among the models; a 'MODEL+ADAPTER' source is the model followed by its `adapter` input."""
    from zoo.catalog import Parent
    from zoo.runner import run_operator

    from .api import RUN_FIELDS, adapter_parents, resolve_pair

    method = get_method(method_name, STREAMING)
    order: list = []  # (model, adapter or None) of each model input
    groups: list[list[Parent]] = []  # each model input's parents: the model, then its adapter

    def position(ref) -> int:
        pair = resolve_pair(catalog, ref)
        if pair not in order:
            order.append(pair)
            groups.append([Parent(pair[0], "input"), *adapter_parents(pair[1])])
        return order.index(pair)

    if base is not None:
        run_base = position(base)
        groups[run_base][0] = Parent(order[run_base][0], "base")
    specs = []
    for s in slices:
        sources = [{"input": position(src.ref), "layer_range": list(src.layer_range), "parameters": src.parameters}
                   for src in s.sources]
        specs.append({"sources": sources, "base": position(s.base) if s.base is not None else None,
                      "parameters": s.parameters})
    parameters = dict(parameters or {})
    lifted = {k: parameters.pop(k) for k in list(parameters) if k in RUN_FIELDS}
    params = {"method": method.name, "slices": specs, "parameters": parameters, "dtype": dtype,
              "out_dtype": out_dtype, **extra, **lifted}
    parents = [p for group in groups for p in group]
    return run_operator(catalog, OPERATOR, parents, params, out, tags=tags, reuse=reuse, progress=progress,
                        options={"device": device, "workers": workers})
