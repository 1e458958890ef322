"""Greedy soup (Wortsman et al. 2022, https://arxiv.org/abs/2203.05482): add models to a
uniform soup, best first, keeping each only if the soup's validation score improves."""
from __future__ import annotations

from typing import Sequence

from pydantic import Field

from zoo.catalog import Catalog, Parent
from zoo.checkpoint import Checkpoint
from zoo.registry import OperatorParams
from zoo.runner import OperatorCall, OperatorOutput

from ..api import run_evaluated
from ..scoring import Scorer, state_of, write_merge
from . import MergeMethod, register


class GreedySoupParams(OperatorParams):
    task: str = Field(..., min_length=1, description="validation task the soup is scored on, e.g. digits")
    split: str = Field("val", min_length=1, description="split the candidates are scored on")


def evaluate(call: OperatorCall) -> OperatorOutput:
    p: GreedySoupParams = call.params
    entries = [e for _, e in call.inputs]
    ckpts = [call.checkpoint(i) for i in range(len(entries))]
    scorer = Scorer(ckpts[0], p.task)
    own = []
    for ck in ckpts:
        scorer.check_names(ck.names(), str(ck.path))
        own.append(scorer.score(state_of(ck), p.split))
    sign = -1.0 if scorer.higher else 1.0
    order = sorted(range(len(entries)), key=lambda i: sign * own[i])  # stable: ties keep input order
    first = order[0]
    total = state_of(ckpts[first])
    kept, best = [first], own[first]
    candidates = [{"ref": entries[first].ref, "score": own[first], "soup_score": own[first], "kept": True}]
    for i in order[1:]:
        add = state_of(ckpts[i])
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
    written = write_merge(call, "linear", None, [ckpts[i] for i in kept], [1.0] * len(kept))
    report = {"method": "greedy_soup", "task": p.task, "split": p.split, "metric": scorer.task.primary,
              "candidates": candidates, "kept": [entries[i].ref for i in kept], "soup_score": best,
              "best_single": {"ref": entries[first].ref, "score": own[first]}}
    return OperatorOutput(written, metrics=scorer.metrics_of(written, p.split), notes={"evaluated_merge": report})


def describe(report: dict) -> str:
    return (f"greedy soup kept {len(report['kept'])} of {len(report['candidates'])} "
            f"({report['metric']} {report['soup_score']:.4f} vs best single {report['best_single']['score']:.4f})")


def greedy_soup(catalog: Catalog, refs: Sequence[str | int], task: str, out: str | None = None,
                split: str = "val", *, tags: Sequence[str] = (), reuse: bool = True,
                device: str = "cpu") -> tuple[Checkpoint, dict]:
    """Greedy soup of `refs` scored on `task`. Returns (checkpoint, report); the report lists,
    best first, each model's own score, the score of the soup with it added, and whether
    it was kept. Lineage: kept models are `input` (weight 1/k), rejected ones `candidate`."""
    return run_evaluated(catalog, "greedy_soup", None, refs, {"task": task, "split": split}, out=out, tags=tags,
                         reuse=reuse, device=device)


register(MergeMethod(
    "greedy_soup", evaluate=evaluate, params=GreedySoupParams, describe=describe, needs_base=False,
    summary="greedy soup: average, best first, the models that improve validation (Wortsman 2022)",
    reference="https://arxiv.org/abs/2203.05482",
))
