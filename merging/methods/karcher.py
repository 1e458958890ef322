"""Karcher mean (mergekit's `karcher`): the Riemannian (Frechet) mean of the models on the
unit hypersphere, found by fixed-point iteration (log-map the points at the current mean,
average the tangents, exp-map back), scaled by the mean of the models' norms. Each whole
tensor is one point; every model counts equally (a given base is one more model, as in
mergekit, whose karcher takes no base).

mergekit iterates on the flattened tensors in the merge dtype. Every iterate is a linear
combination of the inputs, so here one pass gathers their inner products in float64, the
same iteration (the same tolerances, branches and stopping rule) runs on N coefficients,
and a second pass writes the result: streamed, and without float32 cancellation in the
tangent vectors.
"""
from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import BeforeValidator, Field

from zoo.param_types import number, refuse_bool

from ..job import Emit, TensorJob
from . import MergeMethod, register
from .spherical import gram, write_combination

MaxIter = Annotated[int, Field(ge=0, le=10_000), BeforeValidator(refuse_bool)]
Tol = number(gt=0, lt=1)


def _norm(c: torch.Tensor, g: torch.Tensor) -> float:
    return math.sqrt(max(0.0, float(c @ g @ c)))


def coefficients(g: torch.Tensor, max_iter: int, tol: float) -> torch.Tensor:
    """c with result = sum_i c_i x_i: mergekit's karcher_merge_tensors (equal weights) on the
    coefficients of the iterates, given the Gram matrix g of the inputs."""
    n = g.shape[0]
    alphas = [1.0 / n] * n
    norms = [math.sqrt(max(0.0, float(g[i, i]))) for i in range(n)]
    units = [torch.zeros(n, dtype=torch.float64) for _ in range(n)]
    for i in range(n):
        if norms[i] != 0.0:
            units[i][i] = 1.0 / norms[i]
    valid = [i for i in range(n) if norms[i] > tol]
    if not valid:
        return torch.zeros(n, dtype=torch.float64)
    total = sum(alphas[i] for i in valid)
    weights = [alphas[i] / total for i in valid]
    vunits = [units[i] for i in valid]

    mean = sum(w * u for w, u in zip(weights, vunits))
    mean_norm = _norm(mean, g)
    mean = vunits[0].clone() if mean_norm < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros(n, dtype=torch.float64)
        for w, u in zip(weights, vunits):
            dot = min(1.0, max(-1.0, float(mean @ g @ u)))
            theta = math.acos(dot)
            if theta < tol:
                continue
            tangent += w * (theta / math.sin(theta)) * (u - dot * mean)
        t_norm = _norm(tangent, g)
        if t_norm < tol:
            break
        mean = math.cos(t_norm) * mean + math.sin(t_norm) * (tangent / t_norm)
        unit_norm = _norm(mean, g)
        if unit_norm > tol:
            mean = mean / unit_norm
    scale = sum(a * nrm for a, nrm in zip(alphas, norms))
    return scale * mean


def run(job: TensorJob, emit: Emit) -> None:
    if len(job.models) == 1:
        for start, count in job.chunks():
            emit(start, job.model_chunk(0, start, count))
        return
    c = coefficients(gram(job, use_base=False), int(job.shared["max_iter"]), float(job.shared["tol"]))
    write_combination(job, emit, c, use_base=False)


register(MergeMethod(
    "karcher", run=run, needs_base=False, min_models=1,
    shared_params={"max_iter": 10, "tol": 1e-5}, types={"max_iter": MaxIter, "tol": Tol},
    summary="Riemannian (Karcher) mean of the models on the hypersphere, scaled by their mean norm",
    reference="https://arxiv.org/abs/2603.04972",
))
