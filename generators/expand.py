"""Expanding a catalogued model to a larger shape: target widths, tensor plan, streaming
write, and the `expand.*` operators (LEMON, bert2BERT FPI and AKI, Net2Net)."""
from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Literal

import torch
from pydantic import Field

from zoo.checkpoint import WEIGHT_INDEXES, Checkpoint
from zoo.errors import ZooError
from zoo.families import Family, TensorRole, Widths, family_of
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput
from zoo.writer import TensorSpec

from .expansion import (Recipe, aki_merge, build_maps, check_target, depth_plan, expand_tensor, identity_norm,
                        new_layer_maps, new_shape, stack_plan)
from .gathered import Scratch


class ExpandParams(OperatorParams):
    hidden_size: int | None = Field(None, ge=1, description="target hidden size [default: unchanged]")
    num_layers: int | None = Field(None, ge=1, description="target depth (LEMON, Net2Net: at most 2x) "
                                                          "[default: unchanged]")
    num_heads: int | None = Field(None, ge=1, description="target attention heads [default: hidden/head_dim]")
    intermediate_size: int | None = Field(None, ge=1, description="target MLP width [default: scaled with hidden]")
    seed: int = Field(0, description="seed of the random splits (symmetry breaking) and unit maps (bert2BERT, Net2Net)")


class LemonParams(ExpandParams):
    depth_init: Literal["cancel", "zero"] = Field(
        "cancel", description="new layers' output projections: cancel (units paired inside the layer, non-zero "
                              "fan-outs that sum to zero) or zero (the reference code's rule: a unit with one copy "
                              "gets 0, so all-zero at unchanged width)")


def RECIPES(seed: int, depth_init: str = "cancel") -> dict[str, Recipe]:
    def seeded() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    return {
        "lemon": Recipe("lemon", fill="mean", split="random", rescale_norms=True, depth="zero_output",
                        depth_init=depth_init),
        "bert2bert": Recipe("bert2bert", fill="none", split="equal", rescale_norms=False, depth="stack",
                            unit_map="random", generator=seeded()),
        "bert2bert_aki": Recipe("bert2bert_aki", fill="none", split="equal", rescale_norms=False, depth="stack",
                                unit_map="random", generator=seeded(), aki=True),
        "net2net": Recipe("net2net", fill="none", split="equal", rescale_norms=False, depth="zero_output",
                          unit_map="random", generator=seeded(), depth_init="zero"),
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


@dataclass(frozen=True)
class Planned:
    """One output tensor: what it is made from and how."""

    name: str
    source: str
    role: TensorRole
    new: bool = False  # in a layer added by depth growth (LEMON, Net2Net)
    identity_norm: bool = False  # post-LN depth growth: this LayerNorm becomes gamma = 1, beta = 0
    aki_source: str | None = None  # AKI: the next layer's tensor that the added units/heads copy


@dataclass
class ExpansionPlan:
    family: Family
    config: dict
    src: Widths
    dst: Widths
    recipe: Recipe
    outputs: list[Planned]
    synthesized: dict[str, str]  # tied head -> embedding it copies
    specs: list[TensorSpec]


# Post-LN depth growth (LEMON's reference code for Post-LN BERT): the copy of layer i before a
# new layer gets an identity block-output LN; the new layer gets an identity attention-output
# LN, cancelling output projections, and keeps layer i's block-output LN.
POST_LN_NORMS = ("attention_out_norm", "block_out_norm")  # the kinds a post-LN family names


def _post_ln_identity(role: TensorRole, new: bool, before_new: bool) -> bool:
    return (new and role.kind == "attention_out_norm") or (before_new and role.kind == "block_out_norm")


def plan_expansion(ckpt: Checkpoint, method: str, p: ExpandParams) -> ExpansionPlan:
    family, config = family_of(ckpt)
    src = family.widths(config)
    dst = target_widths(family, src, p)
    if dst == src:  # an "expansion" that copies its source would be a new entry with nothing new in it
        raise ZooError(f"the target shape equals the source's (hidden {src.hidden}, {src.layers} layers, MLP "
                       f"{src.intermediate}): give a larger hidden_size, num_layers or intermediate_size (zoo expand: "
                       "--hidden-size, --num-layers, --intermediate-size)")
    recipe = RECIPES(p.seed, getattr(p, "depth_init", "cancel"))[method]
    check_target(family, src, dst, max_depth_ratio=None if recipe.depth == "stack" else 2)
    if recipe.fill != "none":
        recipe.fill = "zero" if family.norm == "rms" else "mean"
    if family.norm == "post_ln" and method == "lemon" and dst.hidden % src.hidden:
        raise ZooError(f"{family.name} is post-LN: LEMON is lossless only for hidden sizes that are multiples of "
                       f"{src.hidden} (asked {dst.hidden})")
    names = ckpt.names()
    synthesized = family.tied_heads(config, names)  # tied heads the file leaves out: written untied
    roles = family.roles(names + list(synthesized), config)
    post_ln_depth = family.norm == "post_ln" and recipe.depth == "zero_output" and dst.layers > src.layers
    if post_ln_depth and not {r.kind for r in roles.values()} >= set(POST_LN_NORMS):
        raise ZooError(f"{family.name} is post-LN and does not name its attention-output and block-output "
                       "LayerNorms, which depth growth needs; expand width only")
    plan = (stack_plan if recipe.depth == "stack" else depth_plan)(src.layers, dst.layers)
    outputs = []
    by_layer: dict[int, list[str]] = {}
    for n in names + list(synthesized):
        layer = roles[n].layer
        if layer is None:
            outputs.append(Planned(n, n, roles[n]))
        else:
            by_layer.setdefault(layer, []).append(n)
    for position, (layer, is_new) in enumerate(plan):
        before_new = position + 1 < len(plan) and plan[position + 1][1]
        for n in by_layer.get(layer, []):
            role = roles[n]
            aki = recipe.aki and layer + 1 < src.layers and family.rename_layer(n, layer + 1) in roles
            outputs.append(Planned(family.rename_layer(n, position), n, role, is_new,
                                   post_ln_depth and _post_ln_identity(role, is_new, before_new),
                                   family.rename_layer(n, layer + 1) if aki else None))
    specs = []
    for o in outputs:
        info = ckpt.info(synthesized.get(o.source, o.source))
        specs.append(TensorSpec(o.name, new_shape(info.shape, o.role, src, dst), info.dtype))
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
    cancel = plan.recipe.depth_init == "cancel" and plan.recipe.split == "random"
    new_maps = new_layer_maps(maps) if cancel else maps
    config = expanded_config(plan)
    side = {rel: ckpt.root / rel for rel in ckpt.side_files if rel not in WEIGHT_INDEXES | {"config.json", "README.md"}}
    writer = open_writer(plan.specs, config=config, side_files=side)
    if progress is not None and hasattr(progress, "set_total"):
        progress.set_total(len(plan.outputs))
    scratch = threading.local()  # each worker's output memory, reused tensor after tensor

    def work(item) -> None:
        index, o = item
        t = ckpt.get(plan.synthesized.get(o.source, o.source))
        if o.identity_norm:
            t = identity_norm(tuple(plan.specs[index].shape), o.name.endswith("bias"), t.dtype)
        elif t.is_floating_point():
            device = devices[index % len(devices)]
            recipe = replace(plan.recipe, generator=_generator(seed, o.name))  # per tensor: any thread order
            zero_output = o.new and recipe.depth == "zero_output"
            if not hasattr(scratch, "alloc"):
                scratch.alloc = Scratch()
            t = expand_tensor(t.to(device), o.role, o.name, new_maps if o.new else maps, recipe,
                              zero_output=zero_output, alloc=scratch.alloc)
            if o.aki_source is not None:  # (equal splits draw nothing: the next layer expands the same way)
                nxt = expand_tensor(ckpt.get(o.aki_source).to(device), o.role, o.name, maps, recipe)
                t = aki_merge(t, nxt, o.role, maps)
        writer.write(o.name, t)
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


for _method, _version, _params, _summary in (
        ("lemon", "2", LemonParams, "lossless width/depth expansion (LEMON, Wang et al. 2024)"),
        ("bert2bert", "2", ExpandParams, "bert2BERT FPI (Chen et al. 2022): random copies, equal splits, depth by "
                                         "stacking"),
        ("bert2bert_aki", "1", ExpandParams, "bert2BERT AKI: FPI whose added units/heads copy the next layer's, "
                                             "depth by stacking"),
        ("net2net", "2", ExpandParams, "Net2WiderNet/DeeperNet: random copies with equal splits (baseline)")):
    register(Operator(f"expand.{_method}", _version, _params, _operator(_method), _summary, default_role="source",
                      inputs=(InputSpec("source"),)))
