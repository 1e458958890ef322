"""Lambda search (Ilharco et al. 2023, https://arxiv.org/abs/2212.04089): task arithmetic with
the scaling coefficient picked on validation; with `negate`, forgetting a task under a
control-task constraint."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pydantic import Field

from zoo.catalog import Catalog, Parent
from zoo.checkpoint import Checkpoint
from zoo.errors import ZooError
from zoo.registry import OperatorParams
from zoo.runner import OperatorCall, OperatorOutput
from zoo.training import for_task

from ..api import run_evaluated
from ..apply import apply
from ..scoring import Scorer, base_and_models, higher_is_better, state_of, write_merge
from ..settings import Weight
from . import MergeMethod, register

DEFAULT_LAMBDAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.5)


class LambdaSearchParams(OperatorParams):
    task: str = Field(..., min_length=1, description="validation task the lambdas are scored on")
    lambdas: list[Weight] = Field(default_factory=lambda: list(DEFAULT_LAMBDAS), min_length=1,
                                  description="grid of scaling coefficients, tried in order")
    split: str = Field("val", min_length=1, description="split the grid is scored on")
    negate: bool = Field(False, description="subtract the task vectors (forget the task): pick the worst score")
    control_task: str | None = Field(None, min_length=1, description="a task whose score must stay acceptable")
    control_min: float | None = Field(None, description="acceptable control score [default: control_ratio x base's]")
    control_ratio: float = Field(0.95, ge=0, description="control_min as a fraction of the base's control score")


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


def evaluate(call: OperatorCall) -> OperatorOutput:
    """Adding: the best score on `task`. Negating: the worst (forgetting it). With a control
    task, only lambdas whose control score stays acceptable count. Ties go to the first
    lambda in grid order."""
    p: LambdaSearchParams = call.params
    b, others = base_and_models(call)
    base_ck = call.checkpoint(b)
    scorer = Scorer(base_ck, p.task)
    scorer.check_names(base_ck.names(), str(base_ck.path))
    control, control_min = None, p.control_min
    if p.control_task is not None:
        _, _, control = for_task(base_ck, p.control_task)
        if higher_is_better(control) != scorer.higher:
            raise ZooError(f"lambda_search: {p.task} and {p.control_task} rank their metrics in opposite directions")
    base_state = state_of(base_ck)
    models = [state_of(call.checkpoint(i)) for i in others]
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
    written = write_merge(call, "task_arithmetic", base_ck, [call.checkpoint(i) for i in others], weights,
                          {"lambda": chosen["lambda"]})
    report = {"method": "lambda_search", "task": p.task, "split": p.split, "metric": scorer.task.primary,
              "negate": p.negate, "base": call.inputs[b][1].ref, "finetuned": [call.inputs[i][1].ref for i in others],
              "grid": grid, "lambda": chosen["lambda"], "score": chosen["score"]}
    if control is not None:
        report.update(control_task=p.control_task, control_min=control_min, control=chosen["control"])
    return OperatorOutput(written, metrics=scorer.metrics_of(written, p.split), notes={"evaluated_merge": report})


def describe(report: dict) -> str:
    extra = f", {report['control_task']} {report['control']:.4f}" if "control" in report else ""
    return f"lambda {report['lambda']:g} chosen ({report['metric']} {report['score']:.4f}{extra})"


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
    return run_evaluated(catalog, "lambda_search", base, finetuned, params, out=out, tags=tags, reuse=reuse,
                         device=device)


register(MergeMethod(
    "lambda_search", evaluate=evaluate, params=LambdaSearchParams, describe=describe, needs_base=True,
    summary="task arithmetic with lambda picked on validation; negation under a control (Ilharco 2023)",
    reference="https://arxiv.org/abs/2212.04089",
))
