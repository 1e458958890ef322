"""Evaluation-driven merging: merges whose recipe is chosen by scoring candidates on a task,
registered as operators (`merge.greedy_soup`, `merge.lambda_search`, `merge.atlas`) so
they cache, run in pipelines and from `zoo merge --method ...` like any other merge.

- `greedy_soup` (Wortsman et al. 2022, https://arxiv.org/abs/2203.05482): add models to a
  uniform soup, best first, keeping each only if the soup's validation score improves.
- `lambda_search` (Ilharco et al. 2023, https://arxiv.org/abs/2212.04089): task arithmetic
  with the scaling coefficient picked on validation; with `negate`, forgetting a task under a
  control-task constraint.
- `atlas` (Zhang et al. 2024, https://arxiv.org/abs/2407.07089): one learned coefficient
  per task vector per tensor, trained by gradient descent on a few (labelled or unlabelled)
  examples.

Candidates are scored in memory (one module, state dicts loaded into it); only the chosen
model is written, through the merge engine (soup, lambda search) or the core writer
(aTLAS). The search report (every candidate's score, the choice, learned coefficients) is
kept with the run (`zoo show --json` -> run.notes.evaluated_merge); the chosen model's
metrics on the validation split are stored on its entry.
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field

from zoo.catalog import Catalog, Parent
from zoo.checkpoint import Checkpoint
from zoo.errors import ZooError
from zoo.registry import Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput, run_operator
from zoo.training import for_task, split_metrics

from .apply import apply
from .engine import merge_checkpoints
from .methods import get_method
from .operator import resolve_input
from .spec import MergeParams

DEFAULT_LAMBDAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.5)
VERSION = "1"


# ----- scoring candidates in memory -----------------------------------------------------------
def higher_is_better(task) -> bool:
    """Accuracy-like headline metrics go up; loss-like ones (loss, perplexity) go down."""
    return task.primary not in ("loss", "perplexity")


class _Scorer:
    """One family module for a task; scores state dicts by loading them into it."""

    def __init__(self, ckpt: Checkpoint, task_spec: str):
        self.fam, self.config, self.task = for_task(ckpt, task_spec)
        self.model = self.fam.load(ckpt).float().eval()
        self.keys = set(self.model.state_dict())
        self.higher = higher_is_better(self.task)

    def check_names(self, names, where: str) -> None:
        unknown = sorted(set(names) - self.keys)
        if unknown:
            raise ZooError(f"{where}: tensor {unknown[0]!r} is not a parameter of the {self.fam.name} model "
                           f"({len(unknown)} such); evaluated merging needs Hugging Face tensor names")

    def load(self, state: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.model.load_state_dict(state, strict=False)

    def score(self, state: Mapping[str, torch.Tensor] | None, split: str, task=None) -> float:
        """The task's headline metric on `split` (for `state`, or the loaded weights)."""
        if state is not None:
            self.load(state)
        task = task or self.task
        return float(task.evaluate(self.model, self.config, split)[task.primary])

    def metrics_of(self, written, split: str) -> dict[str, float]:
        """Every metric of the checkpoint as written (its dtype included), catalog-named."""
        self.load(_tensors(Checkpoint.open(written.path)))
        return split_metrics(self.task, split, self.task.evaluate(self.model, self.config, split))

    def better(self, a: float, b: float) -> bool:
        """a strictly better than b."""
        return a > b if self.higher else a < b


def _tensors(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """All tensors; floating ones in float32 (the math precision)."""
    out = {}
    for n in ckpt.names():
        t = ckpt.get(n)
        out[n] = t.float() if t.is_floating_point() else t
    return out


def _base_and_models(call: OperatorCall) -> tuple[int, list[int]]:
    """Input positions: exactly one `base`, at least one other."""
    roles = [p.role for p, _ in call.inputs]
    if roles.count("base") != 1:
        raise ZooError(f"{call.operator.name}: give exactly one input with role 'base' (got {roles.count('base')})")
    base = roles.index("base")
    others = [i for i in range(len(roles)) if i != base]
    if not others:
        raise ZooError(f"{call.operator.name}: no fine-tuned models given")
    return base, others


def _engine_merge(call: OperatorCall, method: str, base: Checkpoint | None, models: list[Checkpoint],
                  weights: list[float], parameters: dict | None = None):
    """Write the chosen merge through the streaming engine (the same math a plain merge uses)."""
    params = MergeParams(parameters=parameters or {}, model_parameters=[{"weight": w} for w in weights])
    writer, _ = merge_checkpoints(get_method(method), base, models, params, call.writer,
                                  device=call.options.get("device", "cpu"), progress=call.progress)
    return writer.result


# ----- greedy soup ----------------------------------------------------------------------------
class GreedySoupParams(OperatorParams):
    task: str = Field(..., description="validation task the soup is scored on, e.g. digits")
    split: str = Field("val", description="split the candidates are scored on")


def _greedy_soup(call: OperatorCall) -> OperatorOutput:
    p: GreedySoupParams = call.params
    if any(parent.role == "base" for parent, _ in call.inputs):
        raise ZooError("merge.greedy_soup averages its inputs and takes no base (give every model role 'input')")
    entries = [e for _, e in call.inputs]
    ckpts = [call.checkpoint(i) for i in range(len(entries))]
    scorer = _Scorer(ckpts[0], p.task)
    own = []
    for ck in ckpts:
        scorer.check_names(ck.names(), str(ck.path))
        own.append(scorer.score(_tensors(ck), p.split))
    sign = -1.0 if scorer.higher else 1.0
    order = sorted(range(len(entries)), key=lambda i: sign * own[i])  # stable: ties keep input order
    first = order[0]
    total = _tensors(ckpts[first])
    kept, best = [first], own[first]
    candidates = [{"ref": entries[first].ref, "score": own[first], "soup_score": own[first], "kept": True}]
    for i in order[1:]:
        add = _tensors(ckpts[i])
        trial_sum = {n: (t + add[n] if t.is_floating_point() and n in add else t) for n, t in total.items()}
        trial = {n: (t / (len(kept) + 1) if t.is_floating_point() else t) for n, t in trial_sum.items()}
        s = scorer.score(trial, p.split)
        keep = scorer.better(s, best)
        candidates.append({"ref": entries[i].ref, "score": own[i], "soup_score": s, "kept": keep})
        if keep:
            total, best = trial_sum, s
            kept.append(i)
    call.set_lineage([Parent(e.id, "input", 1.0 / len(kept)) if i in kept else Parent(e.id, "candidate", 0.0)
                      for i, e in enumerate(entries)])
    written = _engine_merge(call, "linear", None, [ckpts[i] for i in kept], [1.0] * len(kept))
    report = {"method": "greedy_soup", "task": p.task, "split": p.split, "metric": scorer.task.primary,
              "candidates": candidates, "kept": [entries[i].ref for i in kept], "soup_score": best,
              "best_single": {"ref": entries[first].ref, "score": own[first]}}
    return OperatorOutput(written, metrics=scorer.metrics_of(written, p.split), notes={"evaluated_merge": report})


# ----- lambda search --------------------------------------------------------------------------
class LambdaSearchParams(OperatorParams):
    task: str = Field(..., description="validation task the lambdas are scored on")
    lambdas: list[float] = Field(default_factory=lambda: list(DEFAULT_LAMBDAS), min_length=1,
                                 description="grid of scaling coefficients, tried in order")
    split: str = Field("val", description="split the grid is scored on")
    negate: bool = Field(False, description="subtract the task vectors (forget the task): pick the worst score")
    control_task: str | None = Field(None, description="a task whose score must stay acceptable")
    control_min: float | None = Field(None, description="acceptable control score [default: control_ratio x base's]")
    control_ratio: float = Field(0.95, description="control_min as a fraction of the base's control score")


def task_arithmetic_state(base: Mapping[str, torch.Tensor], models: Sequence[Mapping[str, torch.Tensor]],
                          lam: float, weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """base + lam * sum w_i (m_i - base), tensor by tensor, with the merge engine's own math
    (`merging.apply`), so a candidate scores exactly as its registered merge will."""
    out = {}
    for n, b in base.items():
        have = [m[n] for m in models if n in m]
        if not b.is_floating_point() or len(have) != len(models):
            out[n] = b
            continue
        out[n] = apply("task_arithmetic", b, have, name=n, weight=list(weights), **{"lambda": lam})
    return out


def _lambda_search(call: OperatorCall) -> OperatorOutput:
    """Adding: the best score on `task`. Negating: the worst (forgetting it). With a control
    task, only lambdas whose control score stays acceptable count. Ties go to the first
    lambda in grid order."""
    p: LambdaSearchParams = call.params
    b, others = _base_and_models(call)
    base_ck = call.checkpoint(b)
    scorer = _Scorer(base_ck, p.task)
    scorer.check_names(base_ck.names(), str(base_ck.path))
    control, control_min = None, p.control_min
    if p.control_task is not None:
        _, _, control = for_task(base_ck, p.control_task)
        if higher_is_better(control) != scorer.higher:
            raise ZooError(f"lambda_search: {p.task} and {p.control_task} rank their metrics in opposite directions")
    base_state = _tensors(base_ck)
    models = [_tensors(call.checkpoint(i)) for i in others]
    weights = [-1.0 if p.negate else 1.0] * len(models)
    if control is not None and control_min is None:
        base_control = scorer.score(base_state, p.split, control)
        control_min = base_control * p.control_ratio if scorer.higher else base_control / p.control_ratio
    grid = []
    for lam in p.lambdas:
        row: dict[str, Any] = {"lambda": float(lam),
                               "score": scorer.score(task_arithmetic_state(base_state, models, lam, weights), p.split)}
        if control is not None:
            row["control"] = scorer.score(None, p.split, control)
            row["ok"] = row["control"] >= control_min if scorer.higher else row["control"] <= control_min
        grid.append(row)
    allowed = [r for r in grid if r.get("ok", True)]
    if not allowed:
        raise ZooError(f"lambda_search: no lambda keeps {p.control_task} at {control_min:.4g} or better; "
                       "lower control_min or add smaller lambdas")
    want_high = scorer.higher != p.negate
    chosen = allowed[0]
    for r in allowed[1:]:
        if (r["score"] > chosen["score"]) if want_high else (r["score"] < chosen["score"]):
            chosen = r
    call.set_lineage([call.inputs[b][0]] + [Parent(call.inputs[i][0].ref, "input", w) for i, w in zip(others, weights)])
    written = _engine_merge(call, "task_arithmetic", base_ck, [call.checkpoint(i) for i in others], weights,
                            {"lambda": chosen["lambda"]})
    report = {"method": "lambda_search", "task": p.task, "split": p.split, "metric": scorer.task.primary,
              "negate": p.negate, "base": call.inputs[b][1].ref, "finetuned": [call.inputs[i][1].ref for i in others],
              "grid": grid, "lambda": chosen["lambda"], "score": chosen["score"]}
    if control is not None:
        report.update(control_task=p.control_task, control_min=control_min, control=chosen["control"])
    return OperatorOutput(written, metrics=scorer.metrics_of(written, p.split), notes={"evaluated_merge": report})


# ----- aTLAS ----------------------------------------------------------------------------------
class AtlasParams(OperatorParams):
    task: str = Field(..., description="task whose few training examples train the coefficients")
    steps: int = Field(50, ge=0, description="Adam steps")
    lr: float = Field(0.01, gt=0, description="learning rate of the coefficients")
    examples: int = Field(64, ge=1, description="training examples used (one fixed batch)")
    unsupervised: bool = Field(False, description="minimise prediction entropy instead of cross-entropy (no labels)")
    init: float = Field(0.3, description="starting value of every coefficient")
    seed: int = Field(0, description="which examples are drawn")
    split: str = Field("val", description="split the result's metrics are measured on")


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


def _atlas(call: OperatorCall) -> OperatorOutput:
    """Learn alpha[i][tensor] in theta = base + sum_i alpha_i * tau_i by Adam on a fixed batch
    of `examples` training examples; write theta in the base's dtypes."""
    p: AtlasParams = call.params
    b, others = _base_and_models(call)
    base_ck = call.checkpoint(b)
    scorer = _Scorer(base_ck, p.task)
    base_state = _tensors(base_ck)
    scorer.check_names(base_state, "atlas")
    module = scorer.model
    for param in module.parameters():
        param.requires_grad_(False)
    taus = task_vectors_of(base_state, [_tensors(call.checkpoint(i)) for i in others])
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


register(Operator("merge.greedy_soup", VERSION, GreedySoupParams, _greedy_soup,
                  "greedy soup: average, best first, the models that improve validation (Wortsman 2022)", "merge"))
register(Operator("merge.lambda_search", VERSION, LambdaSearchParams, _lambda_search,
                  "task arithmetic with lambda picked on validation; negation under a control (Ilharco 2023)",
                  "merge"))
register(Operator("merge.atlas", VERSION, AtlasParams, _atlas,
                  "aTLAS: per-tensor task-vector coefficients learned on a few examples (Zhang 2024)", "merge"))


# ----- Python API -----------------------------------------------------------------------------
def _run(catalog: Catalog, op: str, parents: list[Parent], params: dict, out: str | None, tags: Sequence[str],
         reuse: bool, device: str) -> tuple[Checkpoint, dict]:
    result = run_operator(catalog, op, parents, params, out, tags=tags, reuse=reuse, options={"device": device})
    ckpt = catalog.open(result.entry)
    ckpt.entry, ckpt.reused = result.entry, result.reused
    run = catalog.producing_run(result.entry)
    return ckpt, ((run.timings or {}).get("notes") or {}).get("evaluated_merge", {})


def _parents(catalog: Catalog, base, models: Sequence) -> list[Parent]:
    if not models:
        raise ZooError("no fine-tuned models given")
    head = [Parent(resolve_input(catalog, base), "base")] if base is not None else []
    return head + [Parent(resolve_input(catalog, r), "input") for r in models]


def greedy_soup(catalog: Catalog, refs: Sequence[str | int], task: str, out: str | None = None,
                split: str = "val", *, tags: Sequence[str] = (), reuse: bool = True,
                device: str = "cpu") -> tuple[Checkpoint, dict]:
    """Greedy soup of `refs` scored on `task`. Returns (checkpoint, report); the report lists,
    best first, each model's own score, the score of the soup with it added, and whether
    it was kept. Lineage: kept models are `input` (weight 1/k), rejected ones `candidate`."""
    return _run(catalog, "merge.greedy_soup", _parents(catalog, None, refs), {"task": task, "split": split},
                out, tags, reuse, device)


def lambda_search(catalog: Catalog, base: str | int, finetuned: Sequence[str | int], task: str,
                  lambdas: Sequence[float] = DEFAULT_LAMBDAS, split: str = "val", out: str | None = None,
                  control_task: str | None = None, control_min: float | None = None, negate: bool = False,
                  control_ratio: float = 0.95, *, tags: Sequence[str] = (), reuse: bool = True,
                  device: str = "cpu") -> tuple[Checkpoint, dict]:
    """Task arithmetic base + lam * sum(tau_i) (or base - lam * sum(tau_i) with `negate`),
    lam picked on `split`; with `control_task`, only lambdas keeping its score at
    `control_min` (default `control_ratio` x the base's) count. Returns (checkpoint, report)."""
    params = {"task": task, "lambdas": [float(x) for x in lambdas], "split": split, "negate": negate,
              "control_task": control_task, "control_min": control_min, "control_ratio": control_ratio}
    return _run(catalog, "merge.lambda_search", _parents(catalog, base, finetuned), params, out, tags, reuse, device)


def atlas(catalog: Catalog, base: str | int, finetuned: Sequence[str | int], task: str, *, steps: int = 50,
          lr: float = 0.01, examples: int = 64, unsupervised: bool = False, init: float = 0.3, seed: int = 0,
          out: str | None = None, split: str = "val", tags: Sequence[str] = (), reuse: bool = True,
          device: str = "cpu") -> tuple[Checkpoint, dict]:
    """aTLAS coefficients learned on `examples` examples of `task` (cross-entropy, or
    prediction entropy with `unsupervised`). Returns (checkpoint, report); the report holds
    the objective before/after, the loss curve and every learned coefficient."""
    params = {"task": task, "steps": steps, "lr": lr, "examples": examples, "unsupervised": unsupervised,
              "init": init, "seed": seed, "split": split}
    return _run(catalog, "merge.atlas", _parents(catalog, base, finetuned), params, out, tags, reuse, device)


def summary(report: dict) -> str:
    """One line for the command line: what the search chose."""
    if report.get("method") == "greedy_soup":
        return (f"greedy soup kept {len(report['kept'])} of {len(report['candidates'])} "
                f"({report['metric']} {report['soup_score']:.4f} vs best single {report['best_single']['score']:.4f})")
    if report.get("method") == "lambda_search":
        extra = f", {report['control_task']} {report['control']:.4f}" if "control" in report else ""
        return f"lambda {report['lambda']:g} chosen ({report['metric']} {report['score']:.4f}{extra})"
    if report.get("method") == "atlas":
        o = report["objective"]
        return f"aTLAS objective {o['start']:.4f} -> {o['end']:.4f} over {len(report['losses'])} steps"
    return ""


__all__ = ["atlas", "atlas_objective", "atlas_state", "greedy_soup", "higher_is_better", "lambda_search",
           "summary", "task_arithmetic_state", "task_vectors_of"]
