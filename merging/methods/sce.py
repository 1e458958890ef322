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
Streams in up to three passes over each tensor: variances (one float buffer of the tensor,
kept: the selection threshold comes from it and both later passes select by it),
energies, output.
"""
from __future__ import annotations

import torch
from pydantic import StrictBool

from ..job import Emit, TensorJob
from ..settings import UnitInterval
from . import MergeMethod, register
from .sparsify import _buffer, select
from .task_vectors import elected_sign


def _task_vectors(job: TensorJob, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The base's chunk and the models' task vectors, one row each (each model cast to the
    math dtype before the subtraction, as mergekit does)."""
    base = job.base_chunk(start, count)
    tvs = torch.empty((len(job.models), count), dtype=base.dtype, device=base.device)
    for i in range(len(job.models)):
        torch.sub(job.model_chunk(i, start, count), base, out=tvs[i])
    return base, tvs


def _variance(tvs: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Population variance across the models in float64, rounded to the task vectors'
    dtype: torch.var's values (it accumulates float32 in double too), but for rare one-ulp
    differences. Two models: ((d_0 - d_1) / 2)^2, the same double as the two-pass formula
    wherever its sums are exact; more: two passes, the sums taken model by model (much
    faster than reductions over the model axis)."""
    n = tvs.shape[0]
    if n == 2:
        var = tvs[0].to(torch.float64).sub_(tvs[1]).square_().mul_(0.25)
    else:
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


def _select_chunk(chunk: torch.Tensor, threshold: float, ties: int) -> int:
    """Overwrite a chunk of variances with its selection (1 kept, 0 not): those above the
    threshold, and of those equal to it the first `ties` still to take (in order of
    position over the whole tensor); returns how many ties are left to take."""
    if ties <= 0:
        torch.gt(chunk, threshold, out=chunk)
        return 0
    tied = chunk == threshold
    found = int(torch.count_nonzero(tied))
    torch.ge(chunk, threshold, out=chunk)
    if found > ties:  # the last chunk with ties to take: drop those past the count
        chunk[tied.nonzero().flatten()[ties:]] = 0
    return ties - min(found, ties)


def erase_and_merge(tvs: torch.Tensor, weights: list[float], keep: torch.Tensor | None = None) -> torch.Tensor:
    """sum_i w_i e_i d_i / max(sum_i w_i e_i, 1e-6), e_i = [sign(d_i) = the sign of sum_i d_i,
    0 counting as +] - mergekit's arithmetic in float ops (sign/relu), several times faster
    here than its boolean masks. Elements where `keep` (the selection, 0/1) is 0 get 0, as if
    their task vectors were zeroed, at the cost of masking one row. Overwrites `tvs`."""
    elected = elected_sign(tvs)
    if keep is not None:
        elected.mul_(keep)  # 0: nothing agrees, the merge is 0 / 1e-6
    merged = divisor = None
    for w, d in zip(weights, tvs):
        agreeing = torch.relu(d.mul_(elected))  # |d| where d has the elected sign, else 0
        share = torch.sign(agreeing).mul_(w)
        agreeing.mul_(w)
        merged = agreeing if merged is None else merged.add_(agreeing)
        divisor = share if divisor is None else divisor.add_(share)
    return merged.mul_(elected).div_(divisor.clamp_(min=1e-6))


def run(job: TensorJob, emit: Emit) -> None:
    n = len(job.models)
    fraction = float(job.shared["select_topk"])
    chunks = job.chunks()

    keep_all = fraction >= 1
    var: torch.Tensor | None = None  # the whole tensor's variances, kept for the later passes
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

    # calculate: each model's mean squared task vector over the whole tensor. The selection
    # is taken here, once, and written over the variances as a 0/1 mask for the last pass.
    energy = [0.0] * n
    ties = selection[1] if selection is not None else 0
    for start, count in chunks:
        tvs = _task_vectors(job, start, count)[1]
        if selection is not None and var is not None:
            ties = _select_chunk(var[start : start + count], selection[0], ties)
            tvs.mul_(var[start : start + count].unsqueeze(0))
        for i, d in enumerate(tvs):
            energy[i] += float(torch.sum(d.square_(), dtype=torch.float64))
    weights = torch.tensor([e / max(1, job.numel) for e in energy], dtype=job.dtype, device=job.device)
    total = torch.sum(weights).item()
    weights = torch.ones_like(weights) / n if abs(total) < 1e-6 else weights / total
    weights = weights.tolist()

    for start, count in chunks:
        base, tvs = _task_vectors(job, start, count)
        mask = var[start : start + count] if selection is not None and var is not None else None
        emit(start, base.add_(erase_and_merge(tvs, weights, mask)))


register(MergeMethod(
    "sce", run=run, needs_base=True, min_models=1,
    shared_params={"select_topk": 1.0, "int8_mask": False},
    types={"select_topk": UnitInterval, "int8_mask": StrictBool},
    summary="select high-variance elements, weight by task-vector energy, erase sign conflicts, merge",
    reference="https://arxiv.org/abs/2408.07990",
))
