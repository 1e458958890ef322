"""DARE (Yu et al. 2024): drop each task-vector element with probability 1 - density and
rescale the rest, then sum (dare_linear) or elect by sign (dare_ties). The drop is seeded by
(seed, tensor, model, chunk), so it is reproducible in any thread order.
"""
from __future__ import annotations

import torch

from zoo.errors import ZooError

from ..job import TensorJob
from ..settings import Rescale
from . import register
from .sparsify import l1_rescale
from .task_vectors import Trim, task_vector_method, trimmed_run

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


def dare_mask(job: TensorJob, i: int, chunk: int, count: int, density: float) -> torch.Tensor:
    """Bernoulli(density) keep-mask for one chunk, seeded by (tensor, model, chunk)."""
    return (job.uniform(count, "dare", i, chunk) < density).to(job.dtype)


def dare_l1_scale(job: TensorJob, i: int, density: float) -> float:
    """mergekit's rescale: match the L1 norm of the delta before and after dropping."""
    before = after = 0.0
    for c, (start, count) in enumerate(job.chunks()):
        base = job.base_chunk(start, count)
        d = job.delta_chunk(i, start, count, base).abs_()
        before += float(d.sum(dtype=torch.float64))
        after += float((d * dare_mask(job, i, c, count, density)).sum(dtype=torch.float64))
    return l1_rescale(before, after)


def random_trim(job: TensorJob) -> Trim:
    """Per model: 1/density (`inverse`, the paper's), mergekit's L1 matching, or no rescale."""
    densities = [float(p["density"]) for p in job.params]
    rescale = rescale_mode(job.shared.get("rescale"))
    scales = [1.0] * len(densities)
    for i, density in enumerate(densities):
        if density < 1:
            scales[i] = (1.0 / density if density > 0 else 0.0) if rescale == "inverse" else (
                dare_l1_scale(job, i, density) if rescale == "l1" else 1.0)

    def trim(i: int, chunk: int, d: torch.Tensor) -> torch.Tensor:
        if densities[i] < 1:
            d.mul_(dare_mask(job, i, chunk, d.numel(), densities[i])).mul_(scales[i])
        return d

    return trim


for _name, _consensus, _summary in (
    ("dare_linear", False, "random drop (p = 1 - density) and rescale, then sum"),
    ("dare_ties", True, "random drop and rescale, then TIES sign consensus"),
):
    register(task_vector_method(
        _name, trimmed_run(random_trim, _consensus), normalize=False, summary=_summary,
        reference="https://arxiv.org/abs/2311.03099", shared_params={"rescale": "inverse"},
        types={"rescale": Rescale},
    ))
