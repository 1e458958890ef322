"""RAM, Reinforced Agent Merging (arXiv 2601.13572), and its tensor-local RAM+ - mergekit's
`ram` and `ramplus_tl`.

Per element, with task vectors d_i = model_i - base, a model contributes where
|d_i| > epsilon. Where exactly one model contributes, its change is kept whole; where
several do, their changes are averaged; where none does, the base is kept:

    ram:         base + sum_i c_i d_i * (u + o / count)
    ramplus_tl:  base + sum_i c_i d_i * (u * lambda_i + o / count)

(c_i: model i contributes; count: how many contribute; u, o: count == 1, count > 1).
RAM+ raises each model's unique changes by lambda_i = 1 + r * clamp(rho_i, 0, alpha), where
rho_i = (its shared elements) / (its unique elements) counted over the whole tensor (an
extra counting pass). No per-model weights: mergekit's methods take only these settings.
"""
from __future__ import annotations

import torch

from ..job import Emit, TensorJob
from zoo.param_types import number

from ..settings import NonNegative
from . import MergeMethod, register


def _contributions(job: TensorJob, start: int, count: int, epsilon: float):
    """(base, d, c, count, overlap, unique) for one chunk, as mergekit computes them."""
    base = job.base_chunk(start, count)
    tv = torch.stack([job.delta_chunk(i, start, count, base) for i in range(len(job.models))])
    nonzero = tv.abs() > epsilon
    counts = nonzero.sum(dim=0, keepdim=True)
    return base, tv, nonzero, counts, counts > 1, counts == 1


def _merge(job: TensorJob, emit: Emit, epsilon: float, lam: torch.Tensor | None) -> None:
    for start, count in job.chunks():
        base, tv, nonzero, counts, overlap, unique = _contributions(job, start, count, epsilon)
        tvz = tv * nonzero
        kept = tvz * unique if lam is None else tvz * unique * lam.unsqueeze(-1)
        merged = (kept + (tvz * overlap / counts.clamp(min=1))).sum(dim=0)
        emit(start, base.add_(merged))


def run_ram(job: TensorJob, emit: Emit) -> None:
    _merge(job, emit, float(job.shared["epsilon"]), None)


def run_ramplus(job: TensorJob, emit: Emit) -> None:
    epsilon, r, alpha = (float(job.shared[k]) for k in ("epsilon", "r", "alpha"))
    shared = unique_n = None
    for start, count in job.chunks():  # counting pass: each model's shared and unique elements
        _, _, nonzero, _, overlap, unique = _contributions(job, start, count, epsilon)
        s, u = (nonzero & overlap).sum(dim=1), (nonzero & unique).sum(dim=1)
        shared, unique_n = (s, u) if shared is None else (shared + s, unique_n + u)
    rho = shared / unique_n.clamp(min=epsilon)
    _merge(job, emit, epsilon, 1 + r * rho.clamp(min=0, max=alpha))


register(MergeMethod(
    "ram", run=run_ram, needs_base=True, min_models=1,
    shared_params={"epsilon": 1e-5}, types={"epsilon": NonNegative},
    summary="keep each change made by one model alone, average changes several models make",
    reference="https://arxiv.org/abs/2601.13572",
))
register(MergeMethod(
    "ramplus_tl", run=run_ramplus, needs_base=True, min_models=1,
    shared_params={"r": 0.1, "alpha": 0.2, "epsilon": 1e-5},
    # epsilon > 0 here: it also bounds the unique count divided by (0/0 would make NaN)
    types={"r": NonNegative, "alpha": NonNegative, "epsilon": number(gt=0)},
    summary="RAM, with each model's unique changes raised by its share of overlapping ones (tensor-local RAM+)",
    reference="https://arxiv.org/abs/2601.13572",
))
