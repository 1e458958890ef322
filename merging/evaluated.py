"""Evaluation-driven merging: merges whose recipe is chosen by scoring candidates on a task.

- `greedy_soup` (Wortsman et al. 2022, https://arxiv.org/abs/2203.05482): add models to a
  uniform soup, best first, keeping each only if the soup's validation score improves.
- `lambda_search` (Ilharco et al. 2023, https://arxiv.org/abs/2212.04089): task arithmetic
  with the scaling coefficient picked on validation; with `negate`, forgetting a task under a
  control-task constraint.
- `atlas` (Zhang et al. 2024, https://arxiv.org/abs/2407.07089): one learned coefficient
  per task vector per tensor, trained by gradient descent on a few (labelled or unlabelled)
  examples.

Candidates are scored in memory (one module, state dicts loaded into it); only the chosen
model is written, through the merge operators (soup, lambda search) or the core writer
(aTLAS), so each result is a catalog entry with its lineage. Each function returns
(checkpoint, report); the checkpoint's `.entry` is the catalog row, and the report is also
kept on the entry's card (`zoo show --json`), under "evaluated_merge".
"""
from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from zoo.card import model_card
from zoo.catalog import Catalog, Parent, RunRecord
from zoo.checkpoint import Checkpoint
from zoo.errors import ZooError
from zoo.training import evaluate as evaluate_entry
from zoo.training import for_task
from zoo.writer import save_tensors

from .apply import apply
from .operator import merge, resolve_input

DEFAULT_LAMBDAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.5)
ATLAS_VERSION = "1"


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


def _opened(catalog: Catalog, ref) -> Checkpoint:
    return catalog.open(resolve_input(catalog, ref))


def _finish(catalog: Catalog, ckpt: Checkpoint, report: dict, task_spec: str, split: str) -> Checkpoint:
    """Store the chosen model's metrics on `split` and the report on its card."""
    entry = ckpt.entry
    report["metrics"] = evaluate_entry(catalog, entry.id, task_spec, split)
    catalog.set_card(entry.id, {"evaluated_merge": report})
    ckpt.entry = catalog.get(entry.id)
    return ckpt


# ----- greedy soup ----------------------------------------------------------------------------
def greedy_soup(catalog: Catalog, refs: Sequence[str | int], task: str, out: str | None = None,
                split: str = "val", *, tags: Sequence[str] = ()) -> tuple[Checkpoint, dict]:
    """Greedy soup: score each model on `split`, sort best first, and add each next model to
    the uniform average only if the soup's score strictly improves. The kept models are
    registered as a `linear` merge (equal weights), so lineage names exactly the kept ones.

    Returns (checkpoint, report); report["candidates"] lists, best first, each model's own
    score, the score of the soup with it added, and whether it was kept."""
    if not refs:
        raise ZooError("greedy_soup: no models given")
    ckpts = [_opened(catalog, r) for r in refs]
    entries = [catalog.get(resolve_input(catalog, r)) for r in refs]
    scorer = _Scorer(ckpts[0], task)
    t0 = time.perf_counter()
    own = []
    for ck in ckpts:
        scorer.check_names(ck.names(), str(ck.path))
        own.append(scorer.score(_tensors(ck), split))
    sign = -1.0 if scorer.higher else 1.0
    order = sorted(range(len(refs)), key=lambda i: sign * own[i])  # stable: ties keep input order
    first = order[0]
    total = _tensors(ckpts[first])
    kept = [first]
    best = own[first]
    candidates = [{"ref": entries[first].ref, "score": own[first], "soup_score": own[first], "kept": True}]
    for i in order[1:]:
        add = _tensors(ckpts[i])
        trial_sum = {n: (t + add[n] if t.is_floating_point() and n in add else t) for n, t in total.items()}
        k = len(kept) + 1
        trial = {n: (t / k if t.is_floating_point() else t) for n, t in trial_sum.items()}
        s = scorer.score(trial, split)
        keep = scorer.better(s, best)
        candidates.append({"ref": entries[i].ref, "score": own[i], "soup_score": s, "kept": keep})
        if keep:
            total, best = trial_sum, s
            kept.append(i)
    kept_refs = [entries[i].ref for i in kept]
    ckpt = merge("linear", models=[entries[i].id for i in kept], weights=[1.0] * len(kept), catalog=catalog,
                 out=out, tags=tags)
    report = {
        "method": "greedy_soup", "task": task, "split": split, "metric": scorer.task.primary,
        "candidates": candidates, "kept": kept_refs, "soup_score": best,
        "best_single": {"ref": entries[first].ref, "score": own[first]},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return _finish(catalog, ckpt, report, task, split), report


# ----- lambda search --------------------------------------------------------------------------
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


def lambda_search(catalog: Catalog, base: str | int, finetuned: Sequence[str | int], task: str,
                  lambdas: Sequence[float] = DEFAULT_LAMBDAS, split: str = "val", out: str | None = None,
                  control_task: str | None = None, control_min: float | None = None, negate: bool = False,
                  control_ratio: float = 0.95, *, tags: Sequence[str] = ()) -> tuple[Checkpoint, dict]:
    """Task arithmetic theta = base + lam * sum(tau_i) (or base - lam * sum(tau_i) with
    `negate`, to forget a task), with lam picked on `split`.

    Adding: the best score on `task`. Negating: the worst score on `task` (forgetting it).
    With `control_task`, only lambdas whose control score stays acceptable count: at least
    `control_min` (at most, for loss-like metrics), by default `control_ratio` (0.95) of the
    base's control score. Ties go to the first lambda in grid order. The chosen lambda is
    registered as `merge.task_arithmetic` (weights +1, or -1 when negating)."""
    if not finetuned:
        raise ZooError("lambda_search: no fine-tuned models given")
    if not lambdas:
        raise ZooError("lambda_search: empty lambda grid")
    base_ck = _opened(catalog, base)
    base_entry = catalog.get(resolve_input(catalog, base))
    ft_entries = [catalog.get(resolve_input(catalog, r)) for r in finetuned]
    scorer = _Scorer(base_ck, task)
    scorer.check_names(base_ck.names(), str(base_ck.path))
    control = None
    if control_task is not None:
        _, _, control = for_task(base_ck, control_task)
        if higher_is_better(control) != scorer.higher:
            raise ZooError(f"lambda_search: {task} and {control_task} rank their metrics in opposite directions")
    t0 = time.perf_counter()
    base_state = _tensors(base_ck)
    models = [_tensors(catalog.open(e)) for e in ft_entries]
    weights = [-1.0 if negate else 1.0] * len(models)
    if control is not None and control_min is None:
        base_control = scorer.score(base_state, split, control)
        control_min = base_control * control_ratio if scorer.higher else base_control / control_ratio
    grid = []
    for lam in lambdas:
        state = task_arithmetic_state(base_state, models, float(lam), weights)
        row: dict[str, Any] = {"lambda": float(lam), "score": scorer.score(state, split)}
        if control is not None:
            row["control"] = scorer.score(None, split, control)
            row["ok"] = row["control"] >= control_min if scorer.higher else row["control"] <= control_min
        grid.append(row)
    allowed = [r for r in grid if r.get("ok", True)]
    if not allowed:
        raise ZooError(f"lambda_search: no lambda keeps {control_task} at {control_min:.4g} or better; "
                       "lower control_min or add smaller lambdas")
    want_high = scorer.higher != negate  # forgetting: the worst score on the task is best
    chosen = allowed[0]
    for r in allowed[1:]:
        if (r["score"] > chosen["score"]) if want_high else (r["score"] < chosen["score"]):
            chosen = r
    ckpt = merge("task_arithmetic", base=base_entry.id, models=[e.id for e in ft_entries], weights=weights,
                 catalog=catalog, out=out, tags=tags, **{"lambda": chosen["lambda"]})
    report = {
        "method": "lambda_search", "task": task, "split": split, "metric": scorer.task.primary,
        "negate": negate, "base": base_entry.ref, "finetuned": [e.ref for e in ft_entries],
        "grid": grid, "lambda": chosen["lambda"], "score": chosen["score"],
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if control is not None:
        report.update(control_task=control_task, control_min=control_min, control=chosen["control"])
    return _finish(catalog, ckpt, report, task, split), report


# ----- aTLAS ----------------------------------------------------------------------------------
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


def atlas(catalog: Catalog, base: str | int, finetuned: Sequence[str | int], task: str, *, steps: int = 50,
          lr: float = 0.01, examples: int = 64, unsupervised: bool = False, init: float = 0.3, seed: int = 0,
          out: str | None = None, split: str = "val", tags: Sequence[str] = ()) -> tuple[Checkpoint, dict]:
    """aTLAS: learn alpha[i][tensor] in theta = base + sum_i alpha_i * tau_i (one scalar per
    task vector per tensor, all starting at `init`) by Adam on `examples` examples drawn
    (with `seed`) from the task's training split: cross-entropy, or prediction entropy with
    `unsupervised`. Writes the result in the base's dtype and registers it as a
    `merge.atlas` run (base role 'base', fine-tunes role 'input', the learned coefficients
    in the run params); its metrics on `split` are stored on the entry."""
    if not finetuned:
        raise ZooError("atlas: no fine-tuned models given")
    if steps < 0 or examples < 1:
        raise ZooError("atlas: steps must be >= 0 and examples >= 1")
    base_entry = catalog.get(resolve_input(catalog, base))
    ft_entries = [catalog.get(resolve_input(catalog, r)) for r in finetuned]
    base_ck = catalog.open(base_entry)
    fam, config, task_obj = for_task(base_ck, task)
    module = fam.load(base_ck).float().eval()
    keys = set(module.state_dict())
    base_state = _tensors(base_ck)
    unknown = sorted(set(base_state) - keys)
    if unknown:
        raise ZooError(f"atlas: tensor {unknown[0]!r} is not a parameter of the {fam.name} model; "
                       "aTLAS needs Hugging Face tensor names")
    for p in module.parameters():
        p.requires_grad_(False)
    t0 = time.perf_counter()
    taus = task_vectors_of(base_state, [_tensors(catalog.open(e)) for e in ft_entries])
    names = [n for n in base_state if all(n in tau for tau in taus)]
    if not names:
        raise ZooError("atlas: the fine-tunes share no floating tensor with the base")
    alpha = torch.full((len(taus), len(names)), float(init), requires_grad=True)
    batch = next(task_obj.train_batches(config, examples, torch.Generator().manual_seed(seed)))

    def coefs(a: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return [{n: a[i, j] for j, n in enumerate(names)} for i in range(len(taus))]

    opt = torch.optim.Adam([alpha], lr=lr)
    losses = []
    for _ in range(steps):
        loss = atlas_objective(module, base_state, taus, coefs(alpha), batch, task_obj, unsupervised)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = atlas_objective(module, base_state, taus, coefs(alpha), batch, task_obj, unsupervised).item()
        learned = alpha.detach().clone()
        state = atlas_state(base_state, taus, [{n: float(v) for n, v in zip(names, row.tolist())} for row in learned])
    seconds = time.perf_counter() - t0

    out_dtype = {n: base_ck.get(n).dtype for n in base_state}
    tensors = {n: t.to(out_dtype[n]).contiguous() for n, t in state.items()}
    summary = {e.ref: {"mean": float(row.mean()), "min": float(row.min()), "max": float(row.max())}
               for e, row in zip(ft_entries, learned)}
    params = {"task": task, "steps": steps, "lr": lr, "examples": examples, "unsupervised": unsupervised,
              "init": init, "seed": seed, "coefficient_summary": summary,
              "coefficients": {e.ref: {n: round(float(v), 6) for n, v in zip(names, row.tolist())}
                               for e, row in zip(ft_entries, learned)}}
    parents = [Parent(base_entry.id, "base")] + [Parent(e.id, "input") for e in ft_entries]
    name = out or f"merge-atlas-{base_entry.name.replace('/', '-')}"
    rows = [{"ref": e.ref, "name": e.name, "location": e.location, "digest": e.digest, "role": p.role,
             "weight": p.weight} for p, e in zip(parents, [base_entry, *ft_entries])]
    card = model_card(name, "merge.atlas", {k: v for k, v in params.items() if k != "coefficients"}, rows, "merge")
    meta = {"operator": "merge.atlas", "version": ATLAS_VERSION,
            "inputs": [{"ref": r["ref"], "digest": r["digest"], "role": r["role"]} for r in rows]}
    written = save_tensors(catalog.incoming_path(), tensors, config=base_ck.config, metadata=meta,
                           extra_files={"README.md": card})
    objective = {"start": losses[0] if losses else final, "end": final}
    metrics = {task_obj.metric_key("atlas_objective_start"): objective["start"],
               task_obj.metric_key("atlas_objective_end"): objective["end"]}
    entry = catalog.register(written, name, run=RunRecord("merge.atlas", ATLAS_VERSION, params, seconds=seconds),
                             inputs=parents, tags=tags, metrics=metrics)
    ckpt = catalog.open(entry)
    ckpt.entry = entry
    report = {
        "method": "atlas", "task": task, "split": split, "base": base_entry.ref,
        "finetuned": [e.ref for e in ft_entries], "objective": objective,
        "losses": [round(v, 6) for v in losses], "coefficients": summary, "tensors": len(names),
        "seconds": round(seconds, 3),
    }
    if not all(math.isfinite(v) for v in objective.values()):
        report["warning"] = "the objective is not finite; try a smaller lr"
    return _finish(catalog, ckpt, report, task, split), report


__all__ = ["atlas", "atlas_objective", "atlas_state", "greedy_soup", "higher_is_better", "lambda_search",
           "task_arithmetic_state", "task_vectors_of"]
