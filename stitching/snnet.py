"""`stitch.snnet`: build a stitched network from a family of anchors (SN-Net v1 or v2),
initialise its stitching layers by least squares, train it (one sampled configuration
per step, under accelerate), measure every configuration and register the network."""
from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import Field

from zoo.determinism import reproducible
from zoo.errors import ZooError
from zoo.families import family_of
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput
from zoo.tasks import get_task
from zoo.training import TrainParams, train_model

from .configs import enumerate_configs, stitch_shapes
from .distill import DistilledTask
from .format import StitchConfig, network_config
from .lsinit import init_stitches
from .measure import config_flops, flag_pareto, measure
from .network import StitchedNetwork


class SNNetParams(OperatorParams):
    task: str = Field(..., min_length=1, description="task to train and evaluate on (digits, pytext, ...)")
    version: Literal["v1", "v2"] = Field("v1", description="v1: small-to-large stitches; v2: two-way (SL, LS, LSL, SLS)")
    steps: int = Field(200, ge=0, description="training steps (0: least-squares init only)")
    lr: float = Field(5e-4, gt=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    kernel_size: int = Field(2, ge=1, description="v1: blocks in the sliding stitching window")
    stride: int = Field(1, ge=1, description="v1: stride of the window")
    sampling: Literal["uniform", "flops"] | None = Field(None, description="uniform over configs, or by FLOPs group "
                                                                           "[default: uniform for v1, flops for v2]")
    flops_groups: int = Field(10, ge=1, description="FLOPs groups for flops sampling")
    train_anchors: bool = Field(True, description="fine-tune the anchors too (else only stitching layers)")
    lora_rank: int = Field(0, ge=0, description="low-rank stitching layers on a frozen least-squares init (v2)")
    distill: float = Field(0.0, ge=0.0, le=1.0, description="weight of distillation from the teacher (largest anchor)")
    temperature: float = Field(1.0, gt=0)
    init_batch: int = Field(64, ge=1, description="examples for the least-squares init")
    seed: int = 0


def load_anchors(call: OperatorCall, role: str = "anchor"):
    """The inputs with `role`, loaded in float32 and sorted by size: (family, [(index, model, config)])."""
    picked = [i for i, (parent, _) in enumerate(call.inputs) if parent.role == role]  # two or more: the contract
    loaded = []
    family = None
    for i in picked:
        fam, config = family_of(call.checkpoint(i))
        if family is not None and fam.name != family.name:
            raise ZooError(f"anchors must be one family: {call.inputs[i][1].ref} is {fam.name}, not {family.name}")
        family = fam
        loaded.append((i, fam.load(call.checkpoint(i)).float(), config))
    loaded.sort(key=lambda item: sum(p.numel() for p in item[1].parameters()))
    return family, loaded


def flops_sampler(configs: list[StitchConfig], groups: int, generator: torch.Generator):
    """SN-Netv2's resource-constrained sampling: a FLOPs group uniformly, then a config in it."""
    flops = [c.stats["flops"] for c in configs]
    lo, hi = min(flops), max(flops)
    width = (hi - lo) / groups or 1
    buckets: dict[int, list[int]] = {}
    for c in configs:
        buckets.setdefault(min(groups - 1, int((c.stats["flops"] - lo) / width)), []).append(c.id)
    members = [ids for _, ids in sorted(buckets.items())]

    def sample() -> int:
        ids = members[int(torch.randint(len(members), (1,), generator=generator))]
        return ids[int(torch.randint(len(ids), (1,), generator=generator))]

    return sample


def uniform_sampler(configs: list[StitchConfig], generator: torch.Generator):
    ids = [c.id for c in configs]
    return lambda: ids[int(torch.randint(len(ids), (1,), generator=generator))]


def build_network(family, anchors: list, configs: list[StitchConfig], lora_rank: int = 0) -> StitchedNetwork:
    widths = [family.widths(cfg).hidden for cfg in (c for _, _, c in anchors)]
    return StitchedNetwork(family, [m for _, m, _ in anchors], stitch_shapes(configs, widths), configs, lora_rank)


def train_network(net: StitchedNetwork, task, task_config: dict, p, teacher=None, progress=None) -> list[float]:
    """Train with one sampled configuration per step (same draw on every process)."""
    generator = torch.Generator().manual_seed(p.seed)
    configs = list(net.configs.values())
    sampling = p.sampling or ("flops" if p.version == "v2" else "uniform")
    net.sampler = (flops_sampler(configs, p.flops_groups, generator) if sampling == "flops"
                   else uniform_sampler(configs, generator))
    if not p.train_anchors:
        for prm in net.anchors.parameters():
            prm.requires_grad_(False)
    objective = DistilledTask(task, teacher, p.distill, p.temperature) if p.distill > 0 else task
    tp = TrainParams(task=p.task, steps=p.steps, lr=p.lr, batch_size=p.batch_size, weight_decay=p.weight_decay,
                     seed=p.seed)
    try:
        _, losses = train_model(net, objective, task_config, tp, progress, partial_graph=True)
    finally:
        net.sampler = None
        for prm in net.anchors.parameters():
            prm.requires_grad_(True)
    return losses


def network_state(net: StitchedNetwork, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Tensors to save: the anchors as they are, stitching layers as plain affine maps
    (LoRA folded in), in the anchors' dtype."""
    state = {k: v.detach() for k, v in net.anchors.state_dict(prefix="anchors.").items()}
    for key, layer in net.stitches.items():
        w, b = layer.merged()
        state[f"stitches.{key}.weight"], state[f"stitches.{key}.bias"] = w, b
    tied = {k for k in state if k.endswith("lm_head.weight")}
    for k in tied:  # tied heads are rebuilt from the embeddings on load
        anchor = k.split(".")[1]
        if any(state[k] is state[e] or state[k].data_ptr() == state[e].data_ptr()
               for e in state if e.startswith(f"anchors.{anchor}.") and e != k):
            del state[k]
    return {k: v.to(dtype).contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}


def pick_teacher(call: OperatorCall, net: StitchedNetwork):
    """The input with role `teacher`, else a frozen copy of the largest anchor as it came in."""
    import copy

    for i, (parent, _) in enumerate(call.inputs):
        if parent.role == "teacher":
            fam, _ = family_of(call.checkpoint(i))
            return fam.load(call.checkpoint(i)).float()
    return copy.deepcopy(net.anchors[len(net.anchors) - 1])


def _snnet(call: OperatorCall) -> OperatorOutput:
    p: SNNetParams = call.params
    if p.lora_rank and p.version != "v2":
        raise ZooError("LoRA stitching layers (lora_rank) are an SN-Netv2 option: use version v2")
    family, anchors = load_anchors(call)
    task = get_task(p.task)
    task_config = anchors[0][2]
    for _, _, cfg in anchors:
        task.check(family, cfg)
    depths = [family.widths(c).layers for _, _, c in anchors]
    configs = enumerate_configs(p.version, depths, p.kernel_size, p.stride)
    net = build_network(family, anchors, configs, p.lora_rank)
    if call.progress is not None and hasattr(call.progress, "set_total"):
        call.progress.set_total(p.steps + 2 * len(configs))
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(p.seed)
    batch = next(task.train_batches(task_config, p.init_batch, gen))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with reproducible(net):  # a tiny network's least squares on one thread: the same stitches on any machine
        init_stitches(net, inputs)
    example = {k: v[:1] for k, v in inputs.items()}
    teacher = pick_teacher(call, net) if p.distill > 0 else None
    for cfg in configs:  # FLOPs first: v2 samples by them
        cfg.stats["flops"] = config_flops(net, cfg, example)
        if call.progress is not None:
            call.progress(1)
    losses = train_network(net, task, task_config, p, teacher, call.progress) if p.steps else []
    train_seconds = time.perf_counter() - t0
    measure(net, family, [c for _, _, c in anchors], task, task_config, example, progress=call.progress)
    front = flag_pareto(configs, f"val/{task.primary}", higher_is_better=task.primary == "accuracy")
    anchor_refs = [call.inputs[i][1].ref for i, _, _ in anchors]
    config = network_config(family, [c for _, _, c in anchors], net_shapes(net), configs, selected=len(anchors) - 1)
    config["stitched"].update(version=p.version, anchor_refs=anchor_refs, task=task.name)
    dtype = getattr(torch, call.inputs[anchors[0][0]][1].dtype or "float32")
    written = call.write_tensors(network_state(net, dtype), config=config)
    largest = net.configs[len(anchors) - 1].stats
    metrics = {task.metric_key(k.split("/", 1)[1]): v for k, v in largest.items() if k.startswith("test/")}
    metrics.update({"stitch/configs": len(configs), "stitch/pareto": len(front),
                    "train_seconds": round(train_seconds, 3)})
    if losses:
        metrics[task.metric_key("train_loss")] = sum(losses[-10:]) / len(losses[-10:])
    return OperatorOutput(written, metrics=metrics, notes={"anchors": anchor_refs, "depths": depths})


def net_shapes(net: StitchedNetwork) -> dict[str, tuple[int, int]]:
    return {k: (s.weight.shape[1], s.weight.shape[0]) for k, s in net.stitches.items()}


register(Operator("stitch.snnet", "1", SNNetParams, _snnet,
                  "stitch a family of pretrained models into one network of many sizes (SN-Net / SN-Netv2)",
                  default_role="anchor", deterministic=False,
                  inputs=(InputSpec("anchor", 2, None), InputSpec("teacher", 0, 1))))
