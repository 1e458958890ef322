"""The streaming merge engine: for each output tensor, read the inputs' slices, run the
method, write the result - tensor by tensor, chunk by chunk, several tensors at a time.

With several devices (`--device cuda` on a multi-GPU machine) tensors are dealt out round
robin, one worker thread per GPU at least. Peak memory is a few chunks per worker plus, for methods that need a whole-tensor
statistic (TIES/breadcrumbs thresholds), one float buffer of the largest tensor; a budget
keeps two huge tensors from being worked on at once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import torch

from zoo.checkpoint import WEIGHT_INDEXES, Checkpoint
from zoo.devices import resolve_devices, workers_for
from zoo.errors import MismatchError, ZooError
from zoo.families import detect, num_layers
from zoo.memory import tune_allocator
from zoo.writer import CheckpointWriter, TensorSpec

from .job import TensorJob, in_memory
from .methods import MergeMethod
from .schedule import budget_for, run_within_budget
from .settings import layer_position, resolve
from .spec import MergeParams
from .tokenizer.plan import plan as tokenizer_plan

_FLOAT = {"float64", "float32", "float16", "bfloat16"}
_NOT_SIDE_FILES = WEIGHT_INDEXES | {"config.json", "README.md", "mergekit_config.yml"}  # the last: this merge's own


@dataclass
class MergeReport:
    """What the engine decided beyond plain merging, for the run's record."""

    copied_from_reference: list[str] = field(default_factory=list)  # non-float or mismatched
    partial: dict[str, int] = field(default_factory=dict)  # tensor -> number of models that had it
    dropped: list[str] = field(default_factory=list)  # in some model but not in the reference
    tokenizer: dict = field(default_factory=dict)  # the output vocabulary and chat template (merging.tokenizer)


def precision(params: MergeParams) -> tuple[torch.dtype, torch.dtype | None, str | None]:
    """(math dtype, dtype the inputs are rounded to first or None, output dtype override).

    mergekit's `dtype`: the inputs are loaded in it (rounded) and the math runs in it; the
    output is in it unless `out_dtype`. An explicit `compute_dtype` (e.g. float32) runs the
    math in that precision instead, on the inputs as loaded (what mergekit's linear, slerp
    and karcher do inside). `out_dtype` alone: float32 math on the inputs as stored, output
    in out_dtype. None of them: float32 math, output in the inputs' dtype."""
    name = params.compute_dtype or params.dtype or "float32"
    compute = getattr(torch, name, None)
    if not isinstance(compute, torch.dtype) or not compute.is_floating_point:
        raise ZooError(f"compute_dtype {name!r} is not a floating-point dtype")
    out_override = params.out_dtype or params.dtype
    if out_override is not None and out_override not in _FLOAT:
        raise ZooError(f"output dtype {out_override!r} is not one of {', '.join(sorted(_FLOAT))}")
    rounded = getattr(torch, params.dtype) if params.dtype else None
    return compute, rounded, out_override


def rounded_source(src, dtype: torch.dtype | None):
    """A tensor source whose floating-point values are first rounded to `dtype` (mergekit
    loads its inputs in `dtype`); `src` itself when no rounding is asked."""
    if dtype is None:
        return src

    def read(start: int, count: int) -> torch.Tensor:
        t = src(start, count)
        return t.to(dtype) if t.is_floating_point() else t

    return read


def check_settings(method: MergeMethod, params: MergeParams, n_models: int) -> None:
    """Unknown parameter names fail before any work, naming the known ones."""
    shared_ok = set(method.shared_params) | set(method.model_params)
    for key in params.parameters:
        if key not in shared_ok:
            raise ZooError(f"{method.name}: unknown parameter {key!r} (known: {', '.join(sorted(shared_ok)) or 'none'})")
    if len(params.model_parameters) not in (0, n_models):
        raise ZooError(f"{method.name}: {len(params.model_parameters)} per-model parameter sets for {n_models} models")
    for i, mp in enumerate(params.model_parameters):
        for key in mp:
            if key not in method.model_params:
                raise ZooError(f"{method.name}: unknown per-model parameter {key!r} for model {i + 1} "
                               f"(known: {', '.join(sorted(method.model_params)) or 'none'})")


def check_shared_names(ref: Checkpoint, models: list[Checkpoint], has_base: bool, copy_unmatched: bool) -> None:
    """Inputs of a merge must hold the same tensor names. A model sharing no tensor (name and
    shape) with the reference (base, else the first model) is always an error: another
    architecture, whatever the options. Names in only some inputs are an error unless
    `copy_unmatched` (then they are merged over the inputs that have them, copied from the
    base when only it has them, and dropped when the base lacks them; the run's notes list
    each)."""
    what = "the base" if has_base else "the first model"
    ref_names = set(ref.names())
    for i, m in enumerate(models):
        names = set(m.names())
        if not any(m.info(n).shape == ref.info(n).shape for n in names & ref_names):
            raise MismatchError(f"model {i + 1} ({m.path.name}) shares no tensor names with {what} ({ref.path.name}) "
                                "(none of the same name and shape): they are different architectures; merge models "
                                "of one architecture")
        if copy_unmatched:
            continue
        only_ref, only_model = sorted(ref_names - names), sorted(names - ref_names)
        if only_ref or only_model:
            name, where = (only_ref[0], f"in {what} but not in model {i + 1}") if only_ref else \
                (only_model[0], f"in model {i + 1} but not in {what}")
            raise MismatchError(f"tensor {name} is {where} ({m.path.name}; {len(only_ref) + len(only_model)} such); "
                                "merge models with the same tensors, or set copy_unmatched: true to merge what is "
                                "shared and keep the base's layout")


def merge_checkpoints(
    method: MergeMethod,
    base: Checkpoint | None,
    models: list[Checkpoint],
    params: MergeParams,
    open_writer: Callable[..., CheckpointWriter],
    *,
    device: str = "cpu",
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
) -> tuple[CheckpointWriter, MergeReport]:
    check_settings(method, params, len(models))
    devices = resolve_devices(device)
    workers = workers_for(devices, workers)
    tune_allocator()
    compute, rounded, out_override = precision(params)

    ref = base if base is not None else models[0]
    report = MergeReport()
    names = ref.names()
    check_shared_names(ref, models, base is not None, params.copy_unmatched)
    family = detect(ref.config, names)  # None for architectures without a family: generic naming
    layers = num_layers(ref.config, names, family)
    members = ([base] if base is not None else []) + models  # positions the tokenizer settings use
    vocab = tokenizer_plan(params, members, base is not None, family, names)  # changes nothing unless set
    report.tokenizer = vocab.notes
    specs, plans = [], []
    for name in names:
        info = ref.info(name)
        merge_it = info.is_float
        present = []
        for i, m in enumerate(models):
            if name not in m.tensors:
                continue
            if not vocab.fits(name, m.info(name).shape, info.shape):
                if params.mismatched_shapes != "base":
                    raise MismatchError(
                        f"tensor {name} has shape {list(m.info(name).shape)} in model {i + 1} ({m.path.name}) but "
                        f"{list(info.shape)} in the {'base' if base is not None else 'first model'} (a resized "
                        f"vocabulary?); merge models of one shape, or set mismatched_shapes: base")
                merge_it = False
                continue
            present.append(i)
        if merge_it and not present:
            merge_it = False
        elif merge_it and len(present) < len(models):
            report.partial[name] = len(present)
        if not merge_it:
            report.copied_from_reference.append(name)
        out_dtype = out_override if (info.is_float and out_override) else info.dtype
        specs.append(TensorSpec(name, vocab.shape(name, info.shape), out_dtype))
        plans.append((name, merge_it, present))
    report.dropped = sorted({n for m in models for n in m.names() if n not in ref.tensors})

    def settings_for(i: int) -> dict:
        own = params.model_parameters[i] if params.model_parameters else {}
        shared = {k: v for k, v in params.parameters.items() if k in method.model_params}
        return {**shared, **own}

    model_settings = [settings_for(i) for i in range(len(models))]
    if method.check is not None:  # settings that depend on each other, for every tensor, before any work
        for name, merge_it, present in plans:
            if merge_it:
                t = layer_position(name, layers, family)
                problem = method.check(
                    [resolve(model_settings[i], method.model_params, name, t, method.name) for i in present],
                    resolve(params.parameters, method.shared_params, name, t, method.name), name)
                if problem:
                    raise ZooError(f"{method.name}: {problem}")

    config = dict(ref.config or {})
    if out_override and config:
        for key in ("torch_dtype", "dtype"):
            if key in config:
                config[key] = out_override
    side = {rel: ref.root / rel for rel in ref.side_files if rel not in _NOT_SIDE_FILES}
    config, side = vocab.config(config), vocab.side_files(side)  # a new vocabulary's size and tokenizer files
    extra = {"extra_files": vocab.files} if vocab.files else {}
    writer = open_writer(specs, config=config or None, side_files=side, max_shard_size=params.max_shard_size, **extra)

    numel = {name: ref.info(name).numel for name in names}

    def work(item) -> None:
        index, (name, merge_it, present) = item
        info = ref.info(name)
        rows = _aligned(vocab, name, members, base is not None, present, rounded) \
            if vocab.covers(name) else None  # token rows laid out in the new vocabulary
        if not merge_it:
            writer.write_slice(name, 0, ref.read(name) if rows is None else rows[0])
        else:
            if rows is None:
                base_src = rounded_source(lambda s, c, n=name: base.read(n, s, c), rounded) \
                    if base is not None else None
                model_srcs = [rounded_source(lambda s, c, n=name, m=models[i]: m.read(n, s, c), rounded)
                              for i in present]
            else:
                offset = 1 if base is not None else 0
                base_src = in_memory(rows[0]) if base is not None else None
                model_srcs = [in_memory(rows[offset + i]) for i in present]
            t = layer_position(name, layers, family)
            job = TensorJob(
                name=name, shape=vocab.shape(name, info.shape),
                base=base_src, models=model_srcs,
                params=[resolve(model_settings[i], method.model_params, name, t, method.name) for i in present],
                shared=resolve(params.parameters, method.shared_params, name, t, method.name),
                seed=params.seed, device=devices[index % len(devices)], dtype=compute, family=family,
            )
            method.run(job, lambda start, chunk: writer.write_slice(name, start, chunk))
        if progress is not None:
            progress(1)

    if progress is not None and hasattr(progress, "set_total"):
        progress.set_total(len(plans))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, workers)))  # tensor-level parallelism wins here
    try:
        with writer:
            if workers <= 1:
                for item in enumerate(plans):
                    work(item)
            else:
                # the largest tensors first: handed out in order, a 65M-element lm_head (last in a
                # Llama) ran alone for 1.5 s at the end of a 1B merge while the other thread idled
                largest = max(numel.values(), default=0)
                run_within_budget(list(enumerate(plans)), lambda item: numel[item[1][0]], work, workers,
                                  budget_for(list(numel.values())), first=lambda item: 2 * numel[item[1][0]] > largest)
    finally:
        torch.set_num_threads(threads)
    return writer, report


def _aligned(vocab, name: str, members: list[Checkpoint], has_base: bool, present: list[int],
             rounded: torch.dtype | None) -> dict[int, torch.Tensor]:
    """A token-indexed tensor of the reference (position 0: the base, else the first model)
    and of the models merged, each whole (rounded to `dtype` first, as mergekit loads it)
    and laid out in the output vocabulary, by position among `members`."""
    offset = 1 if has_base else 0
    ckpts = {0: members[0], **{offset + i: members[offset + i] for i in present}}
    whole = {k: rounded_source(lambda s, c, m=m: m.read(name, s, c), rounded)(0, m.info(name).numel)
             .reshape(m.info(name).shape) for k, m in ckpts.items()}
    return vocab.aligned(name, whole)
