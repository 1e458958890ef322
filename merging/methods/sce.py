"""SCE (Wan et al. 2024, FuseChat): Select the elements whose task vectors vary most across
the models, Calculate each model's weight from its task vector's energy, Erase the entries
whose sign disagrees with the elected one, and merge - mergekit's `sce`.

Per tensor, with task vectors d_i = model_i - base:
- select (`select_topk` < 1): keep the k = int(select_topk * m) elements of largest variance
  across the models (population variance; m = elements with non-zero variance), zero the
  rest in every d_i; ties at the threshold are taken in order of position (mergekit's topk
  leaves them unspecified);
- calculate: w_i = mean(d_i^2) / sum_j mean(d_j^2) over the whole tensor (uniform when that
  sum is below 1e-6, as mergekit);
- erase: the sign of sum_i d_i is elected (0 counts as +); entries of another sign (or 0)
  are dropped;
- merge: base + sum_i w_i e_i d_i / max(sum_i w_i e_i, 1e-6).

There are no per-model weights: mergekit's `sce` takes only `select_topk` and `int8_mask`
(the dtype of its whole-tensor masks; same numbers, accepted with no effect here).
Streams in up to three passes over each tensor: variances (for the selection threshold,
one float buffer of the tensor), energies (the selection kept as bits), output.
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import StrictBool

from ..job import Emit, TensorJob
from ..settings import UnitInterval
from . import MergeMethod, register
from .sparsify import _buffer, select
from .ties import TopK


def _task_vectors(job: TensorJob, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    base = job.base_chunk(start, count)
    return base, torch.stack([job.delta_chunk(i, start, count, base) for i in range(len(job.models))])


def _variance(tvs: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Population variance across the models, two-pass in float64 (sums taken model by model,
    much faster than reductions over the model axis) and rounded to the task vectors'
    dtype: torch.var's values (it accumulates float32 in double too), but for rare one-ulp
    differences."""
    n = tvs.shape[0]
    wide = tvs.to(torch.float64)
    mean = wide[0].clone()
    for k in range(1, n):
        mean.add_(wide[k])
    mean.div_(n)
    wide.sub_(mean).square_()
    var = wide[0]
    for k in range(1, n):
        var.add_(wide[k])
    var.div_(n)
    return out.copy_(var) if out is not None else var.to(tvs.dtype)


def run(job: TensorJob, emit: Emit) -> None:
    n = len(job.models)
    fraction = float(job.shared["select_topk"])
    chunks = job.chunks()

    keep_all = fraction >= 1
    selection: tuple[float, int] | None = None  # (variance threshold, ties to take) when selecting
    if 0 < fraction < 1 and job.numel:
        var = _buffer(job.numel, job.dtype, job.device)
        for start, count in chunks:
            _variance(_task_vectors(job, start, count)[1], out=var[start : start + count])
        k = int(torch.count_nonzero(var) * fraction)  # as mergekit: an int64 tensor times a float (float32)
        if k > 0:
            ((thr, above),) = select(var, [job.numel - k])
            selection = (thr, k - above)
    if not keep_all and selection is None:  # nothing selected: every task vector is zero
        for start, count in chunks:
            emit(start, job.base_chunk(start, count))
        return

    topk = TopK(*selection) if selection is not None else None
    bits: list[np.ndarray] = []  # the selection of each chunk, kept as bits for the last pass

    def selected(c: int, tvs: torch.Tensor) -> torch.Tensor:
        if topk is None:
            return tvs
        if c < len(bits):
            keep = torch.from_numpy(np.unpackbits(bits[c], count=tvs.shape[1]).astype(bool))
        else:
            keep = topk.apply(_variance(tvs)) > 0
            bits.append(np.packbits(keep.cpu().numpy()))
        return tvs * keep.to(device=tvs.device, dtype=tvs.dtype).unsqueeze(0)

    # calculate: each model's mean squared task vector over the whole tensor
    energy = [0.0] * n
    for c, (start, count) in enumerate(chunks):
        tvs = selected(c, _task_vectors(job, start, count)[1])
        for i, s in enumerate(tvs.square().sum(dim=1, dtype=torch.float64).tolist()):
            energy[i] += s
    weights = torch.tensor([e / max(1, job.numel) for e in energy], dtype=job.dtype, device=job.device)
    total = torch.sum(weights).item()
    weights = torch.ones_like(weights) / n if abs(total) < 1e-6 else weights / total
    weights = weights.unsqueeze(-1)

    for c, (start, count) in enumerate(chunks):
        base, tvs = _task_vectors(job, start, count)
        tvs = selected(c, tvs)
        majority = (tvs.sum(dim=0) >= 0).to(tvs.dtype) * 2 - 1
        erased = weights * (tvs.sign() == majority)
        merged = (tvs * erased).sum(dim=0)
        emit(start, base.add_(merged / torch.sum(erased, dim=0).clamp(min=1e-6)))


register(MergeMethod(
    "sce", run=run, needs_base=True, min_models=1,
    shared_params={"select_topk": 1.0, "int8_mask": False},
    types={"select_topk": UnitInterval, "int8_mask": StrictBool},
    summary="select high-variance elements, weight by task-vector energy, erase sign conflicts, merge",
    reference="https://arxiv.org/abs/2408.07990",
))
