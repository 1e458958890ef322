"""Sparsifying task vectors: magnitude trimming (TIES), outlier-and-small trimming
(Model Breadcrumbs), and random drop with rescaling (DARE).

Magnitude thresholds are found with a selection (numpy's in-place introselect, or
`kthvalue` on a GPU) over |delta| - O(n) - instead of sorting the whole tensor. Elements
tied with a threshold value are all kept, so results never depend on element order.
"""
from __future__ import annotations

import numpy as np
import torch

from ..job import TensorJob


def _select(values: torch.Tensor, ranks: list[int]) -> list[float]:
    """Values at ascending ranks (0-based) of a 1-D tensor we own (may be reordered)."""
    if values.device.type == "cpu":
        arr = values.numpy()
        arr.partition(ranks)
        return [float(arr[r]) for r in ranks]
    return [float(torch.kthvalue(values, r + 1).values) for r in ranks]


def abs_deltas(job: TensorJob, i: int) -> torch.Tensor:
    """|model_i - base| for the whole tensor, flattened (one float buffer)."""
    out = torch.empty(job.numel, dtype=job.dtype, device=job.device)
    for start, count in job.chunks():
        base = job.base_chunk(start, count)
        out[start : start + count] = job.delta_chunk(i, start, count, base).abs_()
    return out


def magnitude_bounds(job: TensorJob, i: int, density: float) -> tuple[float, float] | None:
    """Keep |d| >= the k-th largest, k = max(1, int(density*n)); None keeps everything."""
    if density >= 1:
        return None
    if density <= 0 or job.numel == 0:
        return (float("inf"), float("inf"))
    k = max(1, int(density * job.numel))
    (lo,) = _select(abs_deltas(job, i), [job.numel - k])
    return (lo, float("inf"))


def outlier_bounds(job: TensorJob, i: int, density: float, gamma: float) -> tuple[float, float] | None:
    """Breadcrumbs: drop the top `gamma` fraction by magnitude, then the smallest, keeping
    `density` of the elements: keep lo <= |d| <= hi."""
    if density >= 1:
        return None
    n = job.numel
    keep = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - keep - n_top)
    if keep <= 0:
        return (float("inf"), float("inf"))
    lo, hi = _select(abs_deltas(job, i), [n_bottom, n_bottom + keep - 1])
    return (lo, hi)


def apply_bounds(delta: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    if bounds is None:
        return delta
    mag = delta.abs()
    return delta.mul_(((mag >= bounds[0]) & (mag <= bounds[1])).to(delta.dtype))


def dare_mask(job: TensorJob, i: int, chunk: int, count: int, density: float) -> torch.Tensor:
    """Bernoulli(density) keep-mask for one chunk, seeded by (tensor, model, chunk)."""
    g = job.generator("dare", i, chunk)
    return (torch.rand(count, generator=g, device=job.device, dtype=job.dtype) < density).to(job.dtype)


def dare_l1_scale(job: TensorJob, i: int, density: float) -> float:
    """mergekit's rescale: match the L1 norm of the delta before and after dropping."""
    before = after = 0.0
    for c, (start, count) in enumerate(job.chunks()):
        base = job.base_chunk(start, count)
        d = job.delta_chunk(i, start, count, base).abs_()
        before += float(d.sum(dtype=torch.float64))
        after += float((d * dare_mask(job, i, c, count, density)).sum(dtype=torch.float64))
    if before < 1e-7 or after < 1e-7:
        return 1.0
    return before / after
