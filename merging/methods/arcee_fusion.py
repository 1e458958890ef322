"""Arcee Fusion (mergekit's `arcee_fusion`): keep the other model's changes only where they
matter most. Each element's importance is |model - base| times the KL divergence between the
softmax of the model's row and of the base's row (rows along the last axis); the changes whose
importance reaches median + 1.5 x IQR of the tensor's importances are taken, the rest of the
tensor stays the base's.

Streamed: a first pass computes the importances into one float buffer of the tensor's size
(and keeps each row's KL), exact order statistics give the quartiles, a second pass writes
base + (model - base) * mask with mergekit's arithmetic. mergekit estimates the quartiles of
a tensor over 1M elements from a random (unseeded) sample of 1M; here they are exact, so the
result is deterministic. At or below 1M elements both are the same order statistics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..job import Emit, TensorJob
from . import MergeMethod, register
from .sparsify import select

KL_EPS = 1e-8
QUANTILES = (1, 4), (1, 2), (3, 4)  # q1, median, q3 as fractions


def row_kl(params: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """mergekit's KL(softmax(params) || softmax(base)) over the last axis, keepdim."""
    p = F.softmax(params, dim=-1) + KL_EPS
    q = F.softmax(base, dim=-1) + KL_EPS
    return torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)


def threshold(importance: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """median + 1.5 * (q3 - q1), the quantile at q being the sorted value at floor(q (n - 1))
    (mergekit's index), computed in `dtype` as mergekit does. `importance` is reordered."""
    n = importance.numel()
    ranks = [num * (n - 1) // den for num, den in QUANTILES]
    # order statistics in float32 (numpy has no bfloat16; float32 holds every half-precision value exactly)
    values = select(importance.float() if importance.dtype != torch.float64 else importance, sorted(set(ranks)))
    at = dict(zip(sorted(set(ranks)), (v for v, _ in values)))
    q1, median, q3 = (torch.tensor(at[r], dtype=dtype) for r in ranks)
    return median + 1.5 * (q3 - q1)


def run(job: TensorJob, emit: Emit) -> None:
    last = job.shape[-1] if job.shape else 1
    chunks = job.chunks() if len(job.shape) >= 2 else [(0, job.numel)]  # a vector is one row

    def rows(start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (job.base_chunk(start, count).reshape(-1, last), job.model_chunk(0, start, count).reshape(-1, last))

    importance = torch.empty(job.numel, dtype=job.dtype, device=job.device)
    kl = torch.empty(job.numel // last if last else 0, 1, dtype=job.dtype, device=job.device)
    for start, count in chunks:
        base, params = rows(start, count)
        r0 = start // last
        kl[r0 : r0 + base.shape[0]] = row_kl(params, base)
        importance[start : start + count] = ((params - base).abs() * kl[r0 : r0 + base.shape[0]]).reshape(-1)
    limit = threshold(importance.cpu(), job.dtype).to(job.device)
    del importance
    for start, count in chunks:
        base, params = rows(start, count)
        r0 = start // last
        mask = (((params - base).abs() * kl[r0 : r0 + base.shape[0]]) >= limit).float()
        emit(start, (base + (params - base) * mask).reshape(-1))


register(MergeMethod(
    "arcee_fusion", run=run, needs_base=True, min_models=1, max_models=1,
    summary="take the other model's changes where their importance (|delta| x row KL) is an outlier",
    reference="https://arcee.ai",
))
