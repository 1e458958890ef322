"""aTLAS (Zhang et al. 2024, https://arxiv.org/abs/2407.02880): one learned coefficient per
task vector per tensor, trained by gradient descent on a few (labelled or unlabelled)
examples; the result is written in the base's dtypes."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field

from zoo.catalog import Catalog
from zoo.checkpoint import Checkpoint
from zoo.errors import ZooError
from zoo.registry import OperatorParams
from zoo.runner import OperatorCall, OperatorOutput

from ..api import run_evaluated
from ..scoring import Scorer, base_and_models, state_of
from ..settings import SCALE_BOUND
from . import MergeMethod, register


class AtlasParams(OperatorParams):
    task: str = Field(..., min_length=1, description="task whose few training examples train the coefficients")
    steps: int = Field(50, ge=0, description="Adam steps")
    lr: float = Field(0.01, gt=0, description="learning rate of the coefficients")
    examples: int = Field(64, ge=1, description="training examples used (one fixed batch)")
    unsupervised: bool = Field(False, description="minimise prediction entropy instead of cross-entropy (no labels)")
    init: float = Field(0.3, ge=-SCALE_BOUND, le=SCALE_BOUND, description="starting value of every coefficient")
    seed: int = Field(0, description="which examples are drawn")
    split: str = Field("val", min_length=1, description="split the result's metrics are measured on")


def atlas_state(base_state: Mapping[str, torch.Tensor], task_vectors: Sequence[Mapping[str, torch.Tensor]],
                coefficients: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """theta[n] = base[n] + sum_i coefficients[i][n] * tau_i[n]: one scalar (float or 0-d
    tensor, differentiable) per task vector per tensor. Tensors without a task vector or
    a coefficient are the base's. Used both to train the coefficients and to write the result."""
    if len(task_vectors) != len(coefficients):
        raise ZooError(f"atlas: {len(coefficients)} coefficient sets for {len(task_vectors)} task vectors")
    out = {}
    for n, b in base_state.items():
        t = b
        for tau, coef in zip(task_vectors, coefficients):
            if n in tau and n in coef:
                t = t + coef[n] * tau[n]
        out[n] = t
    return out


def task_vectors_of(base_state: Mapping[str, torch.Tensor],
                    models: Sequence[Mapping[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """tau_i = m_i - base for floating tensors present in both with the same shape."""
    out = []
    for m in models:
        out.append({n: m[n] - b for n, b in base_state.items()
                    if b.is_floating_point() and n in m and m[n].shape == b.shape})
    return out


class _Functional:
    """Calls `module` with a given state dict (torch.func.functional_call), so a task's own
    `loss(model, batch)` runs on weights that are a function of the coefficients."""

    def __init__(self, module, state):
        self.module, self.state = module, state

    def __call__(self, *args, **kwargs):
        return torch.func.functional_call(self.module, self.state, args, kwargs)


def atlas_objective(module, base_state, task_vectors, coefficients, batch: dict, task=None,
                    unsupervised: bool = False) -> torch.Tensor:
    """The aTLAS training objective at `coefficients`: the task's loss on a labelled batch
    (cross-entropy for classification), or with `unsupervised` the mean entropy of the
    model's predictions (labels unused)."""
    state = atlas_state(base_state, task_vectors, coefficients)
    fn = _Functional(module, state)
    if not unsupervised:
        if task is None:
            raise ZooError("atlas: a supervised objective needs the task")
        return task.loss(fn, batch)
    logits = fn(**{k: v for k, v in batch.items() if k != "labels"}).logits
    logp = torch.log_softmax(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def evaluate(call: OperatorCall) -> OperatorOutput:
    """Learn alpha[i][tensor] in theta = base + sum_i alpha_i * tau_i by Adam on a fixed batch
    of `examples` training examples; write theta in the base's dtypes."""
    p: AtlasParams = call.params
    b, others = base_and_models(call)
    base_ck = call.checkpoint(b)
    scorer = Scorer(base_ck, p.task)
    base_state = state_of(base_ck)
    scorer.check_names(base_state, "atlas")
    module = scorer.model
    for param in module.parameters():
        param.requires_grad_(False)
    taus = task_vectors_of(base_state, [state_of(call.checkpoint(i)) for i in others])
    names = [n for n in base_state if all(n in tau for tau in taus)]
    if not names:
        raise ZooError("atlas: the fine-tunes share no floating tensor with the base")
    alpha = torch.full((len(taus), len(names)), float(p.init), requires_grad=True)
    batch = next(scorer.task.train_batches(scorer.config, p.examples, torch.Generator().manual_seed(p.seed)))

    def coefs(a: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return [{n: a[i, j] for j, n in enumerate(names)} for i in range(len(taus))]

    opt = torch.optim.Adam([alpha], lr=p.lr)
    losses = []
    for _ in range(p.steps):
        loss = atlas_objective(module, base_state, taus, coefs(alpha), batch, scorer.task, p.unsupervised)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if call.progress is not None:
            call.progress(1)
    with torch.no_grad():
        final = atlas_objective(module, base_state, taus, coefs(alpha), batch, scorer.task, p.unsupervised).item()
        learned = alpha.detach().clone()
        rows = [{n: float(v) for n, v in zip(names, row.tolist())} for row in learned]
        state = atlas_state(base_state, taus, rows)
    tensors = {n: t.to(getattr(torch, base_ck.info(n).dtype)).contiguous() for n, t in state.items()}
    written = call.write_tensors(tensors, config=base_ck.config)
    refs = [call.inputs[i][1].ref for i in others]
    objective = {"start": losses[0] if losses else final, "end": final}
    report = {"method": "atlas", "task": p.task, "split": p.split, "base": call.inputs[b][1].ref, "finetuned": refs,
              "objective": objective, "losses": [round(v, 6) for v in losses], "tensors": len(names),
              "coefficient_summary": {r: {"mean": float(row.mean()), "min": float(row.min()), "max": float(row.max())}
                                      for r, row in zip(refs, learned)},
              "coefficients": {r: {n: round(v, 6) for n, v in row.items()} for r, row in zip(refs, rows)}}
    if not all(math.isfinite(v) for v in objective.values()):
        report["warning"] = "the objective is not finite; try a smaller lr"
    metrics = {**scorer.metrics_of(written, p.split),
               scorer.task.metric_key("atlas_objective_start"): objective["start"],
               scorer.task.metric_key("atlas_objective_end"): objective["end"]}
    return OperatorOutput(written, metrics=metrics, notes={"evaluated_merge": report})


def describe(report: dict) -> str:
    o = report["objective"]
    return f"aTLAS objective {o['start']:.4f} -> {o['end']:.4f} over {len(report['losses'])} steps"


def atlas(catalog: Catalog, base: str | int, finetuned: Sequence[str | int], task: str, *, steps: int = 50,
          lr: float = 0.01, examples: int = 64, unsupervised: bool = False, init: float = 0.3, seed: int = 0,
          out: str | None = None, split: str = "val", tags: Sequence[str] = (), reuse: bool = True,
          device: str = "cpu") -> tuple[Checkpoint, dict]:
    """aTLAS coefficients learned on `examples` examples of `task` (cross-entropy, or
    prediction entropy with `unsupervised`). Returns (checkpoint, report); the report holds
    the objective before/after, the loss curve and every learned coefficient."""
    params = {"task": task, "steps": steps, "lr": lr, "examples": examples, "unsupervised": unsupervised,
              "init": init, "seed": seed, "split": split}
    return run_evaluated(catalog, "atlas", base, finetuned, params, out=out, tags=tags, reuse=reuse, device=device)


register(MergeMethod(
    "atlas", evaluate=evaluate, params=AtlasParams, describe=describe, needs_base=True,
    summary="aTLAS: per-tensor task-vector coefficients learned on a few examples (Zhang 2024)",
    reference="https://arxiv.org/abs/2407.02880",
))
