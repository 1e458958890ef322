"""What task arithmetic and its sparsified, sign-consensus relatives share:

    merged = base + lambda * combine_i( w_i * trim_i(model_i - base) )

`combine` is a sum (divided by the weights' sum with `normalize`) or TIES's sign consensus;
`trim` is each method's own (TIES: magnitude top-k; DARE: random drop and rescale;
breadcrumbs: cut the largest outliers and the smallest deltas).
"""
from __future__ import annotations

from typing import Callable

import torch
from pydantic import StrictBool

from ..job import Emit, TensorJob
from . import MergeMethod

# (model, chunk number, delta chunk) -> the kept delta (may modify it in place)
Trim = Callable[[int, int, torch.Tensor], torch.Tensor]
# the whole-tensor statistics (thresholds, scales) of a job, then its per-chunk trim
PrepareTrim = Callable[[TensorJob], Trim]


def elected_sign(rows) -> torch.Tensor:
    """TIES's elected sign of each element: that of the rows' sum, 0 counting as + (-1 or +1)."""
    total = rows[0].clone()
    for row in rows[1:]:
        total.add_(row)
    return torch.sign(torch.sign(total).add_(0.5))


def elect_and_mix(weighted: list[torch.Tensor], weights: list[float], normalize: bool) -> torch.Tensor:
    """TIES's sign consensus on weighted deltas w_i*d_i: elect the sign of their sum (0 counts
    as +), keep the entries that agree, and (if normalising) divide by the agreeing weights.
    Float ops only (sign/relu), which run several times faster here than boolean masks."""
    elected = elected_sign(weighted)
    mixed = divisor = None
    for w, wd in zip(weights, weighted):
        agreeing = torch.relu(wd.mul_(elected))  # |w d| where w d agrees with the elected sign
        mixed = agreeing if mixed is None else mixed.add_(agreeing)
        if normalize:
            share = torch.sign(agreeing).mul_(w)
            divisor = share if divisor is None else divisor.add_(share)
    mixed.mul_(elected)
    if divisor is not None:
        divisor.add_(1 - torch.sign(divisor.abs()))  # nobody agrees: divide by 1 (mixed is 0)
        mixed.div_(divisor)
    return mixed


def trimmed_run(prepare: PrepareTrim, consensus: bool) -> Callable[[TensorJob, Emit], None]:
    """A streaming run: trim each weighted task vector, then sum them or elect by sign."""

    def run(job: TensorJob, emit: Emit) -> None:
        n = len(job.models)
        weights = [float(p["weight"]) for p in job.params]
        lam = float(job.shared["lambda"])
        normalize = bool(job.shared["normalize"])
        trim = prepare(job)
        for c, (start, count) in enumerate(job.chunks()):
            base = job.base_chunk(start, count)
            weighted = []
            for i in range(n):
                d = trim(i, c, job.delta_chunk(i, start, count, base))
                weighted.append(d.mul_(weights[i]) if weights[i] != 1 else d)
            if consensus:
                mixed = elect_and_mix(weighted, weights, normalize)
            else:
                mixed = torch.stack(weighted).sum(dim=0) if n > 1 else weighted[0]
                divisor = sum(weights)
                if normalize:
                    mixed = mixed / (divisor if abs(divisor) >= 1e-8 else 1.0)
            emit(start, base.add_(mixed, alpha=lam))

    return run


def task_vector_method(name: str, run: Callable[[TensorJob, Emit], None], *, normalize: bool, summary: str,
                       reference: str, model_params: dict | None = None, shared_params: dict | None = None,
                       types: dict | None = None, check: Callable | None = None) -> MergeMethod:
    """An entry with the family's settings, as mergekit's generalized task arithmetic has
    them: per model `weight` and `density`, shared `lambda`, `normalize`, `rescale` (false
    unless the method says otherwise; no effect where nothing is trimmed) and `int8_mask`
    (plus any of the method's own).

    `int8_mask` only changes the dtype of mergekit's whole-tensor sign masks (a memory
    saving, same numbers); the masks here are float ops on one chunk at a time, so it is
    accepted with no effect on the result."""
    return MergeMethod(
        name, run=run, needs_base=True, min_models=1,
        model_params={"weight": 1.0, "density": 1.0, **(model_params or {})},
        shared_params={"lambda": 1.0, "normalize": normalize, "rescale": False, "int8_mask": False,
                       **(shared_params or {})},
        types={"rescale": StrictBool, "int8_mask": StrictBool, **(types or {})}, summary=summary,
        reference=reference, check=check,
    )
