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
from .sparsify import apply_bounds, dare_l1_scale, dare_mask, magnitude_bounds, outlier_bounds

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


def make_run(sparsify: str | None, consensus: bool):
    def run(job: TensorJob, emit: Emit) -> None:
        n = len(job.models)
        weights = [float(p["weight"]) for p in job.params]
        bounds: list = [None] * n
        scales = [1.0] * n
        rescale = rescale_mode(job.shared.get("rescale"))
        for i, p in enumerate(job.params):
            density = float(p["density"])
            if sparsify == "magnitude":
                bounds[i] = magnitude_bounds(job, i, density)
            elif sparsify == "outliers":
                bounds[i] = outlier_bounds(job, i, density, float(p["gamma"]))
            elif sparsify == "random" and density < 1:
                scales[i] = (1.0 / density if density > 0 else 0.0) if rescale == "inverse" else (
                    dare_l1_scale(job, i, density) if rescale == "l1" else 1.0)
        lam = float(job.shared["lambda"])
        normalize = bool(job.shared["normalize"])
        for c, (start, count) in enumerate(job.chunks()):
            base = job.base_chunk(start, count)
            deltas = []
            for i in range(n):
                d = job.delta_chunk(i, start, count, base)
                density = float(job.params[i]["density"])
                if sparsify == "random" and density < 1:
                    d.mul_(dare_mask(job, i, c, count, density)).mul_(scales[i])
                else:
                    d = apply_bounds(d, bounds[i])
                deltas.append(d.mul_(weights[i]))
            if consensus:
                elected = torch.where(sum(deltas) >= 0, 1.0, -1.0).to(base.dtype)
                mixed = torch.zeros_like(base)
                divisor = torch.zeros_like(base)
                for w, d in zip(weights, deltas):
                    agree = (torch.sign(d) == elected).to(base.dtype)
                    mixed.addcmul_(d, agree)
                    divisor.add_(agree, alpha=w)
                divisor[divisor == 0] = 1
            else:
                mixed = sum(deltas)
                divisor = sum(weights)
                if abs(divisor) < 1e-8:
                    divisor = 1.0
            if normalize:
                mixed = mixed / divisor
            if lam != 1:
                mixed = mixed * lam
            emit(start, base.add_(mixed))

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
