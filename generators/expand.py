"""Expanding a catalogued model to a larger shape: target widths, tensor plan, streaming
write, and the `expand.*` operators (LEMON and the bert2bert / Net2Net baselines)."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import torch
from pydantic import Field

from zoo.checkpoint import WEIGHT_INDEXES, Checkpoint
from zoo.errors import ZooError
from zoo.families import Family, TensorRole, Widths, family_of
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput
from zoo.writer import TensorSpec

from .expansion import Recipe, build_maps, check_target, depth_plan, expand_tensor, new_shape


class ExpandParams(OperatorParams):
    hidden_size: int | None = Field(None, ge=1, description="target hidden size [default: unchanged]")
    num_layers: int | None = Field(None, ge=1, description="target depth, at most 2x [default: unchanged]")
    num_heads: int | None = Field(None, ge=1, description="target attention heads [default: hidden/head_dim]")
    intermediate_size: int | None = Field(None, ge=1, description="target MLP width [default: scaled with hidden]")
    seed: int = Field(0, description="seed of the random splits (symmetry breaking)")


def RECIPES(seed: int) -> dict[str, Recipe]:
    return {
        "lemon": Recipe("lemon", fill="mean", split="random", rescale_norms=True, depth="zero_output"),
        "bert2bert": Recipe("bert2bert", fill="none", split="equal", rescale_norms=False, depth="stack"),
        "net2net": Recipe("net2net", fill="none", split="equal", rescale_norms=False, depth="zero_output",
                          unit_map="random", generator=torch.Generator().manual_seed(seed)),
    }


def target_widths(family: Family, src: Widths, p: ExpandParams) -> Widths:
    hidden = p.hidden_size or src.hidden
    if p.num_heads:
        heads = p.num_heads
    elif hidden % src.head_dim == 0:
        heads = max(src.heads, hidden // src.head_dim)
    else:
        heads = src.heads
    group = src.heads // src.kv_heads
    intermediate = p.intermediate_size or max(src.intermediate, src.intermediate * hidden // src.hidden)
    return Widths(hidden, heads, heads // group if heads % group == 0 else -1, src.head_dim, intermediate,
                  p.num_layers or src.layers)


@dataclass
class ExpansionPlan:
    family: Family
    config: dict
    src: Widths
    dst: Widths
    recipe: Recipe
    outputs: list[tuple[str, str, TensorRole, bool]]  # (output name, source name, role, is a new layer)
    synthesized: dict[str, str]  # tied head -> embedding it copies
    specs: list[TensorSpec]


def plan_expansion(ckpt: Checkpoint, method: str, p: ExpandParams) -> ExpansionPlan:
    family, config = family_of(ckpt)
    src = family.widths(config)
    dst = target_widths(family, src, p)
    if dst == src:  # an "expansion" that copies its source would be a new entry with nothing new in it
        raise ZooError(f"the target shape equals the source's (hidden {src.hidden}, {src.layers} layers, MLP "
                       f"{src.intermediate}): give a larger hidden_size, num_layers or intermediate_size (zoo expand: "
                       "--hidden-size, --num-layers, --intermediate-size)")
    check_target(family, src, dst)
    recipe = RECIPES(p.seed)[method]
    if recipe.fill != "none":
        recipe.fill = "zero" if family.norm == "rms" else "mean"
    if family.norm == "post_ln" and method == "lemon":
        if dst.hidden % src.hidden:
            raise ZooError(f"{family.name} is post-LN: LEMON is lossless only for hidden sizes that are multiples of "
                           f"{src.hidden} (asked {dst.hidden})")
        if dst.layers != src.layers:
            raise ZooError(f"{family.name} is post-LN: new layers cannot be exact identities, so depth expansion "
                           f"would not be lossless; expand width only (or use --method bert2bert)")
    names = ckpt.names()
    synthesized = family.tied_heads(config, names)  # tied heads the file leaves out: written untied
    roles = family.roles(names + list(synthesized), config)
    plan = depth_plan(src.layers, dst.layers)
    outputs = []
    by_layer: dict[int, list[str]] = {}
    for n in names + list(synthesized):
        layer = roles[n].layer
        if layer is None:
            outputs.append((n, n, roles[n], False))
        else:
            by_layer.setdefault(layer, []).append(n)
    layered = []
    for position, (layer, is_new) in enumerate(plan):
        for n in by_layer.get(layer, []):
            layered.append((family.rename_layer(n, position), n, roles[n], is_new))
    outputs = outputs + layered
    specs = []
    for out_name, src_name, role, _ in outputs:
        info = ckpt.info(synthesized.get(src_name, src_name))
        specs.append(TensorSpec(out_name, new_shape(info.shape, role, src, dst), info.dtype))
    return ExpansionPlan(family, config, src, dst, recipe, outputs, synthesized, specs)


def expanded_config(plan: ExpansionPlan) -> dict:
    scale = 1.0
    if plan.recipe.rescale_norms and plan.family.norm in ("pre_ln", "rms"):
        scale = (plan.dst.hidden // plan.src.hidden) * plan.src.hidden / plan.dst.hidden
    cfg = plan.family.resized_config(plan.config, plan.dst, eps_scale=scale)
    if plan.synthesized:
        cfg["tie_word_embeddings"] = False
    return cfg


def _generator(seed: int, name: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def run_expansion(ckpt: Checkpoint, plan: ExpansionPlan, seed: int, open_writer, progress=None, workers: int = 2,
                  device: str = "cpu"):
    """Stream every output tensor through `expand_tensor`, tensors dealt out round robin to
    the devices `device` names (`cuda`: every visible GPU); random draws stay on the CPU
    generator, so the model is the same on any device."""
    from zoo.devices import resolve_devices, workers_for
    from zoo.memory import tune_allocator

    devices = resolve_devices(device)
    workers = workers_for(devices, workers)
    tune_allocator()
    maps = build_maps(plan.src, plan.dst, plan.recipe)
    config = expanded_config(plan)
    side = {rel: ckpt.root / rel for rel in ckpt.side_files if rel not in WEIGHT_INDEXES | {"config.json", "README.md"}}
    writer = open_writer(plan.specs, config=config, side_files=side)
    if progress is not None and hasattr(progress, "set_total"):
        progress.set_total(len(plan.outputs))
    def work(item) -> None:
        index, (out_name, src_name, role, is_new) = item
        t = ckpt.get(plan.synthesized.get(src_name, src_name))
        if t.is_floating_point():
            t = t.to(devices[index % len(devices)]).to(torch.float64 if t.dtype == torch.float64 else torch.float32)
            recipe = replace(plan.recipe, generator=_generator(seed, out_name))  # per tensor: any thread order
            zero_output = is_new and recipe.depth == "zero_output"
            t = expand_tensor(t, role, out_name, maps, recipe, zero_output=zero_output)
        writer.write(out_name, t)
        if progress is not None:
            progress(1)

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with writer, ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(work, enumerate(plan.outputs)):
                pass
    finally:
        torch.set_num_threads(threads)
    return writer


def _operator(method: str):
    def fn(call: OperatorCall) -> OperatorOutput:
        ckpt = call.checkpoint(0)
        plan = plan_expansion(ckpt, method, call.params)
        writer = run_expansion(ckpt, plan, call.params.seed, call.writer, call.progress,
                               device=call.options.get("device", "cpu"))
        return OperatorOutput(writer.result, notes={"source_widths": vars(plan.src), "target_widths": vars(plan.dst)})

    return fn


for _method, _summary in (("lemon", "lossless width/depth expansion (LEMON, Wang et al. 2024)"),
                          ("bert2bert", "function-preserving init by circular copies (bert2bert FPI baseline)"),
                          ("net2net", "Net2WiderNet/DeeperNet: random copies with equal splits (baseline)")):
    register(Operator(f"expand.{_method}", "1", ExpandParams, _operator(_method), _summary, default_role="source",
                      inputs=(InputSpec("source"),)))
