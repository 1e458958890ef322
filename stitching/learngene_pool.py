"""`learngene.pool` (Shi et al., AAAI 2024): distil one large pretrained model into a few
small auxiliary models (fewer blocks, smaller widths), keep their blocks as the learngene
pool, and stitch them into variable-sized models.

Distillation loss per auxiliary model: a * CE + (1 - a) * (soft-logit KL + sum over blocks
of MSE between the teacher's block output and the auxiliary block output mapped up by a
learnable transformation matrix T). The matrices are trained with the models; the
stitching layer from auxiliary f to e is then initialised through the teacher's space,
pinv(T_e) T_f (least squares where no matrix applies), and the pool is fine-tuned by
sampling one stitched path per step like SN-Net."""
from __future__ import annotations

import time
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from zoo.errors import ZooError
from zoo.families import Widths, family_of
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput
from zoo.tasks import get_task
from zoo.training import TrainParams, train_model

from .configs import snnet_v1
from .distill import _Replay, follow, soft_kl
from .format import network_config
from .lsinit import least_squares, stitch_positions
from .measure import config_flops, measure, pareto_front
from .snnet import SNNetParams, build_network, net_shapes, network_state, train_network


class PoolParams(OperatorParams):
    task: str = Field(..., min_length=1, description="task to distil and fine-tune on")
    aux_hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, description="hidden size of each "
                                                          "auxiliary model [default: teacher/4 and teacher/2]")
    aux_depth: int | None = Field(None, ge=1, description="blocks per auxiliary model [default: half the teacher's]")
    distill_steps: int = Field(300, ge=1)
    steps: int = Field(200, ge=0, description="pool fine-tuning steps (one sampled path per step)")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the hard-label loss")
    temperature: float = Field(1.0, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0


class PoolDistiller(nn.Module):
    """The auxiliary models and their transformation matrices, trained together."""

    def __init__(self, family, auxes: list[nn.Module], widths: list[int], teacher_width: int, depth: int):
        super().__init__()
        self.family = family
        self.auxes = nn.ModuleList(auxes)
        self.transforms = nn.ModuleList(nn.ModuleList(nn.Linear(w, teacher_width) for _ in range(depth))
                                        for w in widths)

    def block_outputs(self, model: nn.Module, inputs: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
        fam = self.family
        hidden = fam.embed(model, inputs)
        ctx = fam.block_context(model, hidden, inputs)
        outs = []
        for block in fam.blocks(model):
            hidden = fam.run_block(block, hidden, ctx)
            outs.append(hidden)
        return outs, fam.head(model, hidden, ctx)

    def forward(self, **inputs) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        """Every auxiliary model's block outputs and logits (one pass, through data-parallel wrappers)."""
        return [self.block_outputs(aux, inputs) for aux in self.auxes]


class PoolObjective:
    """Task wrapper whose loss is the summed distillation loss of every auxiliary model."""

    def __init__(self, task, teacher: nn.Module, family, alpha: float, temperature: float, teacher_blocks: list[int]):
        self.task, self.teacher, self.family = task, teacher.eval(), family
        self.alpha, self.temperature, self.teacher_blocks = alpha, temperature, teacher_blocks
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def __getattr__(self, name: str):
        return getattr(self.task, name)

    def loss(self, distiller, batch: dict) -> torch.Tensor:
        inner = getattr(distiller, "module", distiller)  # the transforms, behind a data-parallel wrapper
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            t_outs, t_logits = inner.block_outputs(follow(self.teacher, batch), inputs)
        total = 0.0
        for (outs, logits), transforms in zip(distiller(**inputs), inner.transforms):
            hard = self.task.loss(_Replay(_Logits(logits)), batch)
            feat = sum(F.mse_loss(t(o), t_outs[b]) for t, o, b in zip(transforms, outs, self.teacher_blocks))
            soft = soft_kl(logits, t_logits, self.temperature)
            total = total + self.alpha * hard + (1 - self.alpha) * (soft + feat)
        return total


class _Logits:
    def __init__(self, logits: torch.Tensor):
        self.logits = logits


def aux_config(family, teacher_config: dict, hidden: int, depth: int) -> dict:
    w = family.widths(teacher_config)
    heads = max(1, hidden // w.head_dim)
    if hidden % heads:
        raise ZooError(f"auxiliary hidden size {hidden} is not a multiple of the teacher's head size {w.head_dim}")
    return family.resized_config(teacher_config, Widths(hidden, heads, heads, w.head_dim,
                                                        w.intermediate * hidden // w.hidden, depth))


@torch.no_grad()
def init_from_transforms(net, distiller: PoolDistiller, inputs: dict) -> None:
    """Stitching layer f -> e through the teacher's space: x -> pinv(T_e)(T_f x - b_e).
    Positions next to the embeddings (no matrix) fall back to least squares."""
    feats: dict[int, list[torch.Tensor]] = {}
    for key, pairs in stitch_positions(list(net.configs.values())).items():
        ws, bs = [], []
        for fa, fb, ea, eb in sorted(pairs):
            if fb >= 1 and eb >= 1:
                tf, te = distiller.transforms[fa][fb - 1], distiller.transforms[ea][eb - 1]
                pinv = torch.linalg.pinv(te.weight.double())
                ws.append((pinv @ tf.weight.double()).float())
                bs.append((pinv @ (tf.bias - te.bias).double()).float())
            else:
                for a in (fa, ea):
                    if a not in feats:
                        feats[a] = net.boundary_features(a, inputs)
                w, b = least_squares(feats[fa][fb], feats[ea][eb])
                ws.append(w)
                bs.append(b)
        net.stitches[key].set_affine(torch.stack(ws).mean(0), torch.stack(bs).mean(0))


def _pool(call: OperatorCall) -> OperatorOutput:
    p: PoolParams = call.params
    teacher_at = [i for i, (parent, _) in enumerate(call.inputs) if parent.role == "teacher"]  # one: the contract
    family, t_config = family_of(call.checkpoint(teacher_at[0]))
    task = get_task(p.task)
    task.check(family, t_config)
    teacher = family.load(call.checkpoint(teacher_at[0])).float()
    tw = family.widths(t_config)
    depth = p.aux_depth or max(1, tw.layers // 2)
    hiddens = sorted(p.aux_hidden or [max(tw.head_dim, tw.hidden // 4), max(tw.head_dim, tw.hidden // 2)])
    if len(hiddens) < 2:
        raise ZooError("a learngene pool needs at least two auxiliary models (--aux-hidden twice)")
    configs_aux = [aux_config(family, t_config, h, depth) for h in hiddens]
    torch.manual_seed(p.seed)
    auxes = [family.build(c).float() for c in configs_aux]
    distiller = PoolDistiller(family, auxes, hiddens, tw.hidden, depth)
    teacher_blocks = [round((i + 1) * tw.layers / depth) - 1 for i in range(depth)]
    objective = PoolObjective(task, teacher, family, p.alpha, p.temperature, teacher_blocks)
    if call.progress is not None and hasattr(call.progress, "set_total"):
        call.progress.set_total(p.distill_steps + p.steps)
    t0 = time.perf_counter()
    tp = TrainParams(task=p.task, steps=p.distill_steps, lr=p.lr, batch_size=p.batch_size, seed=p.seed)
    distiller, _ = train_model(distiller, objective, t_config, tp, call.progress)
    anchors = [(i, m, c) for i, (m, c) in enumerate(zip(distiller.auxes, configs_aux))]
    configs = snnet_v1([depth] * len(hiddens))
    net = build_network(family, anchors, configs)
    batch = next(task.train_batches(t_config, p.batch_size, torch.Generator().manual_seed(p.seed)))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    init_from_transforms(net, distiller, inputs)
    example = {k: v[:1] for k, v in inputs.items()}
    for cfg in configs:
        cfg.stats["flops"] = config_flops(net, cfg, example)
    if p.steps:
        train_network(net, task, t_config, SNNetParams(task=p.task, steps=p.steps, lr=p.lr, batch_size=p.batch_size,
                                                       seed=p.seed), progress=call.progress)
    seconds = time.perf_counter() - t0
    measure(net, family, configs_aux, task, t_config, example)
    front = pareto_front([(c.id, c.stats["flops"], c.stats.get("test/accuracy", 0.0)) for c in configs])
    for c in configs:
        c.stats["pareto"] = c.id in front
    config = network_config(family, configs_aux, net_shapes(net), configs, selected=len(hiddens) - 1)
    config["stitched"].update(version="learngene-pool", task=task.name, anchor_refs=[],
                              teacher=call.inputs[teacher_at[0]][1].ref)
    dtype = getattr(torch, call.inputs[teacher_at[0]][1].dtype or "float32")
    written = call.write_tensors(network_state(net, dtype), config=config)
    best = max(configs, key=lambda c: c.stats.get("test/accuracy", 0.0))
    metrics = {task.metric_key("accuracy"): best.stats.get("test/accuracy"), "stitch/configs": len(configs),
               "stitch/pareto": len(front), "stored_params": sum(t.numel() for t in net.state_dict().values()),
               "train_seconds": round(seconds, 3)}
    return OperatorOutput(written, metrics=metrics, notes={"aux_hidden": hiddens, "aux_depth": depth,
                                                           "teacher_blocks": teacher_blocks})


register(Operator("learngene.pool", "1", PoolParams, _pool,
                  "distil a large model into a pool of small blocks that stitch into variable-sized models",
                  default_role="teacher", deterministic=False,
                  inputs=(InputSpec("teacher"),)))
