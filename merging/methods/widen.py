"""WIDEN (Yu et al. 2024): merge by weight disentanglement into magnitude and direction.

For each 2-D weight (token embeddings transposed, so each token is a column), every
column's magnitude (L2 norm) and direction (column / norm) are compared with the base's:
|magnitude change| and 1 - cosine of directions. Each difference is ranked within its
model, turned into scores by a softmax across models, and calibrated (above
`above_average_value_ratio` x the model's mean -> `score_calibration_value`); a model's
weight per column is the mean of its magnitude and direction scores. 1-D tensors score
|delta| directly. The merged tensor is base + sum_i weight_i * delta_i.
"""
from __future__ import annotations

import torch

from zoo.families import is_token_embedding

from ..job import Emit, TensorJob
from ..settings import NonNegative
from . import MergeMethod, register


def within_model_rank(diff: torch.Tensor) -> torch.Tensor:
    """(models, columns) -> rank / columns of each entry within its row (stable ties)."""
    cols = diff.shape[1]
    order = torch.argsort(diff, dim=1, stable=True)
    ranks = torch.empty_like(diff)
    ranks.scatter_(1, order, (torch.arange(cols, device=diff.device, dtype=diff.dtype) / cols).expand_as(diff).contiguous())
    return ranks


def importance(significance: torch.Tensor, ratio: float, calibration: float) -> torch.Tensor:
    """Softmax across models; entries above ratio x their model's mean get `calibration`."""
    scores = torch.softmax(significance, dim=0)
    above = significance > significance.mean(dim=1, keepdim=True) * ratio
    return torch.where(above, torch.full_like(scores, calibration), scores)


def column_weights(mag_diff: torch.Tensor, dir_diff: torch.Tensor, ratio: float, calibration: float) -> torch.Tensor:
    mag = importance(within_model_rank(mag_diff), ratio, calibration)
    dirs = importance(within_model_rank(dir_diff), ratio, calibration)
    return 0.5 * (mag + dirs)


def _column_stats(job: TensorJob, transposed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(|magnitude change|, 1 - cos of directions), each (models, columns), streamed."""
    n = len(job.models)
    cols = job.shape[0] if transposed else job.row
    acc = torch.float64
    base_sq = torch.zeros(cols, dtype=acc, device=job.device)
    model_sq = torch.zeros(n, cols, dtype=acc, device=job.device)
    dots = torch.zeros(n, cols, dtype=acc, device=job.device)
    reduce_dim = 1 if transposed else 0
    for start, count in job.chunks():
        b = job.base_chunk(start, count).reshape(-1, job.row).to(acc)
        sl = slice(start // job.row, start // job.row + b.shape[0]) if transposed else slice(None)
        base_sq[sl] += (b * b).sum(dim=reduce_dim)
        for i in range(n):
            m = job.model_chunk(i, start, count).reshape(-1, job.row).to(acc)
            model_sq[i, sl] += (m * m).sum(dim=reduce_dim)
            dots[i, sl] += (m * b).sum(dim=reduce_dim)
    base_norm, model_norm = base_sq.sqrt(), model_sq.sqrt()
    mag_diff = (model_norm - base_norm).abs()
    denom = model_norm * base_norm
    cos = torch.where(denom > 0, dots / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(dots))
    return mag_diff.to(job.dtype), (1.0 - cos.clamp(-1, 1)).to(job.dtype)


def _combine(base: torch.Tensor, models: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
    """base + sum w_i (m_i - base), as base*(1 - sum w) + sum w_i m_i so that one model
    with weight 1 comes back exactly."""
    out = base * (1 - sum(weights))
    for m, w in zip(models, weights):
        out.addcmul_(m, w)
    return out


def run(job: TensorJob, emit: Emit) -> None:
    ratio = float(job.shared["above_average_value_ratio"])
    calibration = float(job.shared["score_calibration_value"])
    n = len(job.models)
    if len(job.shape) < 2:  # vectors and scalars: score |delta| element-wise
        start, count = 0, job.numel
        base = job.base_chunk(start, count)
        models = [job.model_chunk(i, start, count) for i in range(n)]
        diff = torch.stack([(m - base).abs() for m in models]).reshape(n, -1)
        scores = importance(diff, ratio, calibration)
        emit(start, _combine(base, models, list(scores)))
        return
    transposed = len(job.shape) == 2 and is_token_embedding(job.name, job.family)
    weights = column_weights(*_column_stats(job, transposed), ratio, calibration)  # (models, columns)
    for start, count in job.chunks():
        base = job.base_chunk(start, count).reshape(-1, job.row)
        models = [job.model_chunk(i, start, count).reshape(-1, job.row) for i in range(n)]
        if transposed:
            r0 = start // job.row
            w = [weights[i, r0 : r0 + base.shape[0]].unsqueeze(1) for i in range(n)]
        else:
            w = [weights[i].unsqueeze(0) for i in range(n)]
        emit(start, _combine(base, models, w).reshape(-1))


register(MergeMethod(
    "widen", run=run, needs_base=True, min_models=1,
    shared_params={"above_average_value_ratio": 1.0, "score_calibration_value": 1.0},
    types={"above_average_value_ratio": NonNegative, "score_calibration_value": NonNegative},
    summary="weight disentanglement: per-column magnitude and direction scores (merges fine-tuned and pre-trained)",
    reference="https://arxiv.org/abs/2408.03092",
))
