"""Task arithmetic and its sparsified, sign-consensus relatives, as one computation:

    merged = base + lambda * combine_i( w_i * sparsify(model_i - base) )

task_arithmetic: plain sum (negative weights negate a task).  ties: magnitude trimming,
sign election by mass, disjoint mean.  dare_linear / dare_ties: random drop and rescale.
breadcrumbs(_ties): drop the largest outliers and the smallest deltas.
"""
from __future__ import annotations

import torch

from zoo.errors import ZooError

from ..job import TensorJob
from ..settings import REQUIRED
from . import Emit, MergeMethod, register
from .sparsify import apply_bounds, dare_l1_scale, dare_mask, magnitude_topk, outlier_bounds

RESCALES = ("inverse", "l1", "none")


def rescale_mode(value) -> str:
    """`rescale`: true means mergekit's L1 norm matching, false none, or a mode name."""
    if value is True:
        return "l1"
    if value is False or value is None:
        return "none"
    if value in RESCALES:
        return value
    raise ZooError(f"rescale must be one of {', '.join(RESCALES)} (or true/false), not {value!r}")


def elect_and_mix(weighted: list[torch.Tensor], weights: list[float], normalize: bool) -> torch.Tensor:
    """TIES's sign consensus on weighted deltas w_i*d_i: elect the sign of their sum (0 counts
    as +), keep the entries that agree, and (if normalising) divide by the agreeing weights.
    Float ops only (sign/relu), which run several times faster here than boolean masks."""
    elected = weighted[0].clone()
    for wd in weighted[1:]:
        elected.add_(wd)
    elected = torch.sign(torch.sign(elected).add_(0.5))  # -1 or +1
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


def make_run(sparsify: str | None, consensus: bool):
    def run(job: TensorJob, emit: Emit) -> None:
        n = len(job.models)
        weights = [float(p["weight"]) for p in job.params]
        lam = float(job.shared["lambda"])
        normalize = bool(job.shared["normalize"])
        if sparsify is None and not consensus:
            # base + lam * sum w_i (m_i - base) / div, as one weighted sum: one pass per input
            divisor = sum(weights) if normalize and abs(sum(weights)) >= 1e-8 else 1.0
            coef = [lam * w / divisor for w in weights]
            for start, count in job.chunks():
                acc = job.base_chunk(start, count).mul_(1 - sum(coef))
                for i in range(n):
                    acc.add_(job.raw_chunk(i, start, count), alpha=coef[i])
                emit(start, acc)
            return
        bounds: list = [None] * n
        scales = [1.0] * n
        rescale = rescale_mode(job.shared.get("rescale"))
        if sparsify == "magnitude":
            bounds = magnitude_topk(job, [float(p["density"]) for p in job.params])
        for i, p in enumerate(job.params):
            density = float(p["density"])
            if sparsify == "outliers":
                bounds[i] = outlier_bounds(job, i, density, float(p["gamma"]))
            elif sparsify == "random" and density < 1:
                scales[i] = (1.0 / density if density > 0 else 0.0) if rescale == "inverse" else (
                    dare_l1_scale(job, i, density) if rescale == "l1" else 1.0)
        for c, (start, count) in enumerate(job.chunks()):
            base = job.base_chunk(start, count)
            weighted = []
            for i in range(n):
                d = job.delta_chunk(i, start, count, base)
                density = float(job.params[i]["density"])
                if sparsify == "random" and density < 1:
                    d.mul_(dare_mask(job, i, c, count, density)).mul_(scales[i])
                elif sparsify == "magnitude":
                    d = bounds[i].apply(d) if bounds[i] is not None else d
                else:
                    d = apply_bounds(d, bounds[i])
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


def _variant(name: str, sparsify: str | None, consensus: bool, normalize: bool, summary: str, reference: str,
             extra_model: dict | None = None, rescale=None) -> None:
    model_params = {"weight": 1.0, "density": 1.0, **(extra_model or {})}
    shared = {"lambda": 1.0, "normalize": normalize}
    if rescale is not None:
        shared["rescale"] = rescale
    register(MergeMethod(name, make_run(sparsify, consensus), needs_base=True, min_models=1,
                         model_params=model_params, shared_params=shared, summary=summary, reference=reference))


_variant("task_arithmetic", None, False, False, "base + lambda * sum of weighted task vectors",
         "https://arxiv.org/abs/2212.04089")
_variant("ties", "magnitude", True, True, "trim by magnitude, elect sign by mass, disjoint mean",
         "https://arxiv.org/abs/2306.01708")
_variant("dare_linear", "random", False, False, "random drop (p = 1 - density) and rescale, then sum",
         "https://arxiv.org/abs/2311.03099", rescale="inverse")
_variant("dare_ties", "random", True, False, "random drop and rescale, then TIES sign consensus",
         "https://arxiv.org/abs/2311.03099", rescale="inverse")
_variant("breadcrumbs", "outliers", False, False, "drop the largest (gamma) and smallest deltas, then sum",
         "https://arxiv.org/abs/2312.06795", extra_model={"gamma": 0.01})
_variant("breadcrumbs_ties", "outliers", True, False, "breadcrumbs trimming with TIES sign consensus",
         "https://arxiv.org/abs/2312.06795", extra_model={"gamma": 0.01})

__all__ = ["REQUIRED", "make_run", "rescale_mode"]
