"""`learngene.pool` (Shi et al., AAAI 2024): distil one large pretrained model into small
auxiliary models (fewer blocks, smaller widths), keep their blocks as the learngene pool,
and stitch them into variable-sized models.

Auxiliary models come in groups of different depths (the paper's "two groups of
auxiliary models with various numbers of blocks"; reference: 6 and 9 of DeiT-B's 12). As in
the reference code (superselll/learngenepool: one pool per depth, `init_LearngenePool(blk_length)`),
each group is stitched within itself, never across depths; the network holds both groups.

Distillation loss per auxiliary model (reference `criterion2.py`, `distill_loss='all'`):
a * CE + (1 - a) * (soft logits + block outputs + self-attention outputs).
- soft logits: KL(teacher || student) at temperature T (ours; the reference uses the soft
  cross-entropy, mean over all elements: same gradient direction, other scale);
- self-attention outputs (as the reference): MSE between the student's MHSA sub-layer output
  (after the output projection, before the residual add) at block p_k and N_k(teacher's at
  block q_k), N_k a learnable teacher->student linear map; positions `front_end`: student
  [n/3-1, 2n/3-1, n-1] vs teacher [L/3-1, 2L/3-1, L-1] (reference: [3, 7, 11] of 12), or `end`;
- block outputs (deliberate deviation): MSE in the teacher's space between T(student block
  output) and the teacher block at the same relative depth, at every student block, T a
  learnable student->teacher map. The reference maps teacher->student at the attention
  positions; ours keeps one matrix per block so that the stitching layer f -> e can be
  initialised through the teacher's space, pinv(T_e) T_f (the reference initialises it from
  the transposed matrices, averaged over positions).
The pool is then fine-tuned by sampling one stitched path per step like SN-Net."""
from __future__ import annotations

import time
from typing import Annotated, Literal

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

from .configs import grouped_v1
from .distill import _Replay, capture_attention, follow, soft_kl
from .format import network_config
from .lsinit import least_squares, stitch_positions
from .measure import best_config, config_flops, flag_pareto, measure
from .snnet import SNNetParams, build_network, net_shapes, network_state, train_network

Positions = Literal["front_end", "end"]


class PoolParams(OperatorParams):
    task: str = Field(..., min_length=1, description="task to distil and fine-tune on")
    aux_hidden: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, description="hidden size of each "
                                                          "auxiliary model [default: teacher/4 and teacher/2]")
    aux_depths: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list, description="blocks of each group of "
                                                          "auxiliary models [default: 1/2 and 3/4 of the teacher's]")
    positions: Positions = Field("front_end", description="self-attention distillation positions: front_end (a third, "
                                                          "two thirds, last block) or end (last block)")
    distill_steps: int = Field(300, ge=1)
    steps: int = Field(200, ge=0, description="pool fine-tuning steps (one sampled path per step)")
    alpha: float = Field(0.1, ge=0.0, le=1.0, description="weight of the hard-label loss (reference: 0.1)")
    temperature: float = Field(1.0, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0


def attention_pairs(student_depth: int, teacher_depth: int, positions: Positions = "front_end") -> list[tuple[int, int]]:
    """(student block, teacher block) pairs whose self-attention outputs are distilled: the
    reference's `front_end` pairs block k*n/3 - 1 with k*L/3 - 1 (k = 1, 2, 3; n = 6 gives
    [1, 3, 5] against [3, 7, 11]); a student block met twice keeps the deeper pairing."""
    ks = (1, 2, 3) if positions == "front_end" else (3,)
    pairs = {max(0, k * student_depth // 3 - 1): max(0, k * teacher_depth // 3 - 1) for k in ks}
    return sorted(pairs.items())


def feature_blocks(student_depth: int, teacher_depth: int) -> list[int]:
    """The teacher block whose output each student block's output is distilled towards (same relative depth)."""
    return [round((i + 1) * teacher_depth / student_depth) - 1 for i in range(student_depth)]


class PoolDistiller(nn.Module):
    """The auxiliary models and their transformation matrices, trained together: per
    auxiliary model, `transforms` (student -> teacher, one per block) and
    `attn_transforms` (teacher -> student, one per distilled attention position)."""

    def __init__(self, family, auxes: list[nn.Module], widths: list[int], teacher_width: int,
                 depths: list[int], teacher_depth: int, positions: Positions = "front_end"):
        super().__init__()
        self.family = family
        self.auxes = nn.ModuleList(auxes)
        self.feature_blocks = [feature_blocks(d, teacher_depth) for d in depths]
        self.attn_pairs = [attention_pairs(d, teacher_depth, positions) for d in depths]
        self.transforms = nn.ModuleList(nn.ModuleList(nn.Linear(w, teacher_width) for _ in range(d))
                                        for w, d in zip(widths, depths))
        self.attn_transforms = nn.ModuleList(nn.ModuleList(nn.Linear(teacher_width, w) for _ in pairs)
                                             for w, pairs in zip(widths, self.attn_pairs))

    def block_outputs(self, model: nn.Module, inputs: dict) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """(block outputs, self-attention outputs, logits) of one model."""
        fam = self.family
        hidden = fam.embed(model, inputs)
        ctx = fam.block_context(model, hidden, inputs)
        outs = []
        blocks = fam.blocks(model)
        with capture_attention(blocks) as attns:
            for block in blocks:
                hidden = fam.run_block(block, hidden, ctx)
                outs.append(hidden)
        return outs, attns, fam.head(model, hidden, ctx)

    def forward(self, **inputs) -> list[tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]]:
        """Every auxiliary model's outputs (one pass, through data-parallel wrappers)."""
        return [self.block_outputs(aux, inputs) for aux in self.auxes]


def attention_loss(transforms: nn.ModuleList, pairs: list[tuple[int, int]], student: list[torch.Tensor],
                   teacher: list[torch.Tensor]) -> torch.Tensor:
    """sum_k MSE(A_s[p_k], N_k(A_t[q_k])), in the student's space (reference `criterion2.py`)."""
    return sum(F.mse_loss(student[p], n(teacher[q])) for n, (p, q) in zip(transforms, pairs))


class PoolObjective:
    """Task wrapper whose loss is the summed distillation loss of every auxiliary model."""

    def __init__(self, task, teacher: nn.Module, family, alpha: float, temperature: float):
        self.task, self.teacher, self.family = task, teacher.eval(), family
        self.alpha, self.temperature = alpha, temperature
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def __getattr__(self, name: str):
        return getattr(self.task, name)

    def loss(self, distiller, batch: dict) -> torch.Tensor:
        inner = getattr(distiller, "module", distiller)  # the transforms, behind a data-parallel wrapper
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            t_outs, t_attns, t_logits = inner.block_outputs(follow(self.teacher, batch), inputs)
        total = 0.0
        for i, (outs, attns, logits) in enumerate(distiller(**inputs)):
            hard = self.task.loss(_Replay(_Logits(logits)), batch)
            feat = sum(F.mse_loss(t(o), t_outs[b]) for t, o, b in zip(inner.transforms[i], outs, inner.feature_blocks[i]))
            att = attention_loss(inner.attn_transforms[i], inner.attn_pairs[i], attns, t_attns)
            soft = soft_kl(logits, t_logits, self.temperature)
            total = total + self.alpha * hard + (1 - self.alpha) * (soft + feat + att)
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


def aux_plan(widths: Widths, hidden: list[int], depths: list[int]) -> tuple[list[int], list[int]]:
    """(hidden sizes, depths) with defaults filled: widths teacher/4 and /2, depths 1/2 and 3/4 of the teacher's."""
    hiddens = sorted(set(hidden or [max(widths.head_dim, widths.hidden // 4), max(widths.head_dim, widths.hidden // 2)]))
    if len(hiddens) < 2:
        raise ZooError("a learngene pool needs at least two auxiliary widths (--aux-hidden twice)")
    return hiddens, sorted(set(depths or [max(1, widths.layers // 2), max(1, 3 * widths.layers // 4)]))


def _pool(call: OperatorCall) -> OperatorOutput:
    p: PoolParams = call.params
    teacher_at = [i for i, (parent, _) in enumerate(call.inputs) if parent.role == "teacher"]  # one: the contract
    family, t_config = family_of(call.checkpoint(teacher_at[0]))
    task = get_task(p.task)
    task.check(family, t_config)
    teacher = family.load(call.checkpoint(teacher_at[0])).float()
    tw = family.widths(t_config)
    hiddens, depths = aux_plan(tw, p.aux_hidden, p.aux_depths)
    members = [(h, d) for d in depths for h in hiddens]  # group after group, narrow to wide
    configs_aux = [aux_config(family, t_config, h, d) for h, d in members]
    torch.manual_seed(p.seed)
    auxes = [family.build(c).float() for c in configs_aux]
    distiller = PoolDistiller(family, auxes, [h for h, _ in members], tw.hidden, [d for _, d in members], tw.layers,
                              p.positions)
    objective = PoolObjective(task, teacher, family, p.alpha, p.temperature)
    if call.progress is not None and hasattr(call.progress, "set_total"):
        call.progress.set_total(p.distill_steps + p.steps)
    t0 = time.perf_counter()
    tp = TrainParams(task=p.task, steps=p.distill_steps, lr=p.lr, batch_size=p.batch_size, seed=p.seed)
    distiller, _ = train_model(distiller, objective, t_config, tp, call.progress)
    anchors = [(i, m, c) for i, (m, c) in enumerate(zip(distiller.auxes, configs_aux))]
    configs = grouped_v1([[d] * len(hiddens) for d in depths])
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
    higher = task.primary == "accuracy"
    front = flag_pareto(configs, f"val/{task.primary}", higher)  # selection on validation ...
    best = best_config(configs, f"val/{task.primary}", higher)
    config = network_config(family, configs_aux, net_shapes(net), configs, selected=best.id)
    config["stitched"].update(version="learngene-pool", task=task.name, anchor_refs=[],
                              teacher=call.inputs[teacher_at[0]][1].ref)
    dtype = getattr(torch, call.inputs[teacher_at[0]][1].dtype or "float32")
    written = call.write_tensors(network_state(net, dtype), config=config)
    metrics = {task.metric_key(k.split("/", 1)[1]): v for k, v in best.stats.items() if k.startswith("test/")}
    metrics.update({"stitch/selected": best.id, "stitch/configs": len(configs), "stitch/pareto": len(front),
                    "stored_params": sum(t.numel() for t in net.state_dict().values()),
                    "train_seconds": round(seconds, 3)})  # ... test only as the figure of what was selected
    return OperatorOutput(written, metrics=metrics, notes={
        "aux_hidden": hiddens, "aux_depths": depths, "feature_blocks": distiller.feature_blocks,
        "attention_pairs": distiller.attn_pairs})


register(Operator("learngene.pool", "2", PoolParams, _pool,
                  "distil a large model into a pool of small blocks that stitch into variable-sized models",
                  default_role="teacher", deterministic=False,
                  inputs=(InputSpec("teacher"),)))
