"""Model Stock (Jang et al. 2024): move from the base toward the average of the
fine-tunes by a ratio set by the angle between their offsets."""
from __future__ import annotations

import torch
from pydantic import StrictBool

from ..job import Emit, TensorJob
from . import MergeMethod, register


def interpolation_ratio(norms_sq: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
    """t = N cos / (1 + (N-1) cos), cos = mean pairwise cosine of the offsets.
    norms_sq: (N, R), dots: (N, N, R) for R independent rows (R=1 for a whole tensor)."""
    n = norms_sq.shape[0]
    norms = norms_sq.sqrt()
    cos = []
    for i in range(n):
        for j in range(i + 1, n):
            cos.append((dots[i, j] / (norms[i] * norms[j]).clamp(min=1e-6)).clamp(-1, 1))
    c = torch.stack(cos).mean(dim=0)
    denom = 1 + (n - 1) * c
    singular = denom.abs() < 1e-6
    return torch.where(singular, torch.zeros_like(c), n * c / torch.where(singular, torch.ones_like(denom), denom))


def run(job: TensorJob, emit: Emit) -> None:
    n = len(job.models)
    per_row = bool(job.shared["filter_wise"]) and len(job.shape) >= 2
    rows = job.shape[0] if per_row else 1
    norms_sq = torch.zeros(n, rows, dtype=torch.float64, device=job.device)
    dots = torch.zeros(n, n, rows, dtype=torch.float64, device=job.device)
    for start, count in job.chunks():
        base = job.base_chunk(start, count)
        offs = [job.delta_chunk(i, start, count, base).double() for i in range(n)]
        r0 = start // job.row if per_row else 0
        shape = (-1, job.row) if per_row else (1, -1)
        offs = [o.reshape(shape) for o in offs]
        sl = slice(r0, r0 + offs[0].shape[0])
        for i in range(n):
            norms_sq[i, sl] += (offs[i] * offs[i]).sum(dim=1)
            for j in range(i + 1, n):
                dots[i, j, sl] += (offs[i] * offs[j]).sum(dim=1)
    t = interpolation_ratio(norms_sq, dots).to(job.dtype)
    for start, count in job.chunks():
        base = job.base_chunk(start, count)
        avg = job.model_chunk(0, start, count)
        for i in range(1, n):
            avg.add_(job.model_chunk(i, start, count))
        avg.div_(n)
        if per_row:
            r0 = start // job.row
            tt = t[r0 : r0 + count // job.row].repeat_interleave(job.row)
        else:
            tt = t[0]
        emit(start, avg.mul_(tt).add_(base * (1 - tt)))


register(MergeMethod(
    "model_stock", run=run, needs_base=True, min_models=2,
    shared_params={"filter_wise": False}, types={"filter_wise": StrictBool},
    summary="base-to-average interpolation with the ratio from the fine-tunes' angle",
    reference="https://arxiv.org/abs/2403.19522",
))
