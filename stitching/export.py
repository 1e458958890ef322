"""`stitch.export`: one configuration of a stitched network as a standalone checkpoint.

An anchor configuration exports as the plain anchor model (its family's checkpoint, which
transformers loads directly). A stitched configuration exports as a stitched checkpoint
holding only what that route runs: the blocks it uses (renumbered), the anchors they come
from, and its stitching layers; it loads and runs without the rest of the network."""
from __future__ import annotations

import torch
from pydantic import Field

from zoo.errors import ZooError
from zoo.families import get_family
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput

from .format import Segment, StitchConfig, network_config, parse_configs, stitch_key


class ExportParams(OperatorParams):
    config: int = Field(..., ge=0, description="configuration id (see `zoo stitch ls`)")


def pick_config(configs: list[StitchConfig], config_id: int | None = None, budget_flops: float | None = None,
                metric: str = "val/accuracy") -> StitchConfig:
    """By id, or the best configuration (on the validation split) within a FLOPs budget."""
    if config_id is not None:
        for c in configs:
            if c.id == config_id:
                return c
        raise ZooError(f"no configuration {config_id} (ids 0..{len(configs) - 1}; see `zoo stitch ls`)")
    if budget_flops is None:
        raise ZooError("give a configuration id or a FLOPs budget")
    fitting = [c for c in configs if c.stats.get("flops", float("inf")) <= budget_flops]
    if not fitting:
        cheapest = min(c.stats.get("flops", 0) for c in configs)
        raise ZooError(f"no configuration fits {budget_flops:.4g} FLOPs (the cheapest needs {cheapest:.4g})")
    return max(fitting, key=lambda c: (c.stats.get(metric, float("-inf")), -c.stats["flops"]))


def pruned_plan(cfg: StitchConfig) -> tuple[list[int], dict[int, dict[int, int]]]:
    """Anchors the route uses (in order of first use) and, per anchor, old block -> new block."""
    anchors: list[int] = []
    blocks: dict[int, set[int]] = {}
    for seg in cfg.route:
        if seg.anchor not in anchors:
            anchors.append(seg.anchor)
        blocks.setdefault(seg.anchor, set()).update(range(seg.start, seg.stop))
    return anchors, {a: {old: new for new, old in enumerate(sorted(b))} for a, b in blocks.items()}


def _export(call: OperatorCall) -> OperatorOutput:
    src = next(i for i, (parent, _) in enumerate(call.inputs) if parent.role == "source")  # one: the contract
    ckpt = call.checkpoint(src)
    config = ckpt.config or {}
    if config.get("model_type") != "stitched":
        raise ZooError(f"{call.inputs[src][1].ref} is not a stitched network (model_type {config.get('model_type')!r})")
    st = config["stitched"]
    family = get_family(st["family"])
    cfg = pick_config(parse_configs(config), call.params.config)
    metrics = {f"{st.get('task', 'task')}/{k.split('/', 1)[1]}": v for k, v in cfg.stats.items() if k.startswith("test/")}
    metrics.update({k: cfg.stats[k] for k in ("params", "flops") if k in cfg.stats})
    used, renumber = pruned_plan(cfg)
    new_index = {old: new for new, old in enumerate(used)}
    tensors: dict[str, torch.Tensor] = {}
    anchor_configs = []
    for old in used:
        acfg = st["anchors"][old]
        keep = renumber[old]
        if cfg.kind != "anchor":
            acfg = family.resized_config(acfg, family.widths(acfg).with_(layers=len(keep)))
        anchor_configs.append(acfg)
        prefix = f"anchors.{old}."
        for name in ckpt.names():
            if not name.startswith(prefix):
                continue
            inner = name[len(prefix):]
            layer = family.layer_of(inner)
            if layer is not None:
                if layer not in keep:
                    continue
                inner = family.rename_layer(inner, keep[layer])
            out = inner if cfg.kind == "anchor" else f"anchors.{new_index[old]}.{inner}"
            tensors[out] = ckpt.get(name)
    if cfg.kind == "anchor":  # a plain model of the family
        return OperatorOutput(call.write_tensors(tensors, config=anchor_configs[0]), metrics=metrics)
    keys = []
    for key in cfg.stitches:
        front, end, idx = (int(v) for v in key.split("-"))
        new_key = stitch_key(new_index[front], new_index[end], idx)
        keys.append(new_key)
        for part in ("weight", "bias"):
            tensors[f"stitches.{new_key}.{part}"] = ckpt.get(f"stitches.{key}.{part}")
    route = tuple(Segment(new_index[s.anchor], renumber[s.anchor][s.start] if s.stop > s.start else 0,
                          (renumber[s.anchor][s.stop - 1] + 1) if s.stop > s.start else 0) for s in cfg.route)
    single = StitchConfig(0, route, tuple(keys), cfg.kind, {**cfg.stats, "source_config": cfg.id})
    shapes = {k: tuple(st["stitches"][old]) for k, old in zip(keys, cfg.stitches)}
    out_config = network_config(family, anchor_configs, shapes, [single], selected=0)
    out_config["stitched"].update({k: st[k] for k in ("version", "task") if k in st})
    return OperatorOutput(call.write_tensors(tensors, config=out_config), metrics=metrics)


register(Operator("stitch.export", "1", ExportParams, _export,
                  "one configuration of a stitched network as a standalone checkpoint", default_role="source",
                  inputs=(InputSpec("source"), InputSpec("anchor", 0, None))))
