"""What the spherical merges over whole tensors (multislerp, karcher) share: their results
are linear combinations of the input vectors x_i (each model, or its offset from the base),
with coefficients that depend only on the inner products of those vectors. So a first pass
accumulates the Gram matrix G_ij = <x_i, x_j> in float64, chunk by chunk; the method's
iteration runs on N coefficients; a second pass writes sum_i c_i x_i (+ base) chunk by
chunk. Peak memory: a chunk per input, whatever the tensor's size.
"""
from __future__ import annotations

import torch

from ..job import Emit, TensorJob


def _vectors(job: TensorJob, start: int, count: int, base: torch.Tensor | None) -> list[torch.Tensor]:
    if base is None:
        return [job.model_chunk(i, start, count) for i in range(len(job.models))]
    return [job.delta_chunk(i, start, count, base) for i in range(len(job.models))]


def gram(job: TensorJob, use_base: bool) -> torch.Tensor:
    """(N, N) float64 inner products of x_i = model_i (- base when `use_base`), the offsets
    computed in the job's precision (as the method would) and accumulated in float64."""
    n = len(job.models)
    g = torch.zeros(n, n, dtype=torch.float64)
    for start, count in job.chunks():
        base = job.base_chunk(start, count) if use_base else None
        x = torch.stack(_vectors(job, start, count, base)).double()
        g += (x @ x.T).cpu()
    return g


def write_combination(job: TensorJob, emit: Emit, coefficients: torch.Tensor, use_base: bool) -> None:
    """Emit sum_i c_i x_i (+ base when `use_base`), chunk by chunk, in the job's precision."""
    coeffs = [float(c) for c in coefficients]
    for start, count in job.chunks():
        base = job.base_chunk(start, count) if use_base else None
        xs = _vectors(job, start, count, base)  # offsets are fresh tensors; base is kept
        acc = xs[0].mul_(coeffs[0])
        for c, x in zip(coeffs[1:], xs[1:]):
            acc.add_(x, alpha=c)
        emit(start, acc.add_(base) if base is not None else acc)
