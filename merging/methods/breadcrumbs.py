"""Model Breadcrumbs (Davari and Belilovsky 2023): cut the largest `gamma` fraction of each
task vector (outliers) and its smallest entries, keeping `density` of them; sum, or (with
_ties) elect by sign. Every element inside the two thresholds is kept. `rescale: true`
(mergekit's) scales the kept deltas back to the task vector's L1 norm.
"""
from __future__ import annotations

import torch

from ..job import TensorJob
from ..settings import Fraction
from . import register
from .sparsify import abs_deltas, kept_l1, l1_rescale, select
from .task_vectors import Trim, task_vector_method, trimmed_run


def outlier_bounds(job: TensorJob, i: int, density: float, gamma: float,
                   rescale: bool = False) -> tuple[float, float, float] | None:
    """Breadcrumbs: drop the top `gamma` fraction by magnitude, then the smallest, keeping
    `density` of the elements: keep lo <= |d| <= hi, times the L1 `rescale` factor (1 without)."""
    if density >= 1:
        return None
    n = job.numel
    keep = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - keep - n_top)
    if keep <= 0:
        return (float("inf"), float("inf"), 1.0)
    values = abs_deltas(job, i)
    before = float(values.sum(dtype=torch.float64)) if rescale else 0.0
    (lo, _), (hi, _) = select(values, [n_bottom, n_bottom + keep - 1])
    scale = l1_rescale(before, kept_l1(values, lo, hi, ties_at_lo=-1)) if rescale else 1.0
    return (lo, hi, scale)


def apply_bounds(delta: torch.Tensor, bounds: tuple[float, float, float] | None) -> torch.Tensor:
    """Zero the elements with |d| outside [lo, hi] (float ops only: boolean tensors are slow)."""
    if bounds is None:
        return delta
    lo, hi, scale = bounds
    if lo == float("inf"):
        return delta.zero_()
    # hardshrink keeps |d| > lambda; the largest value below lo (in d's dtype) keeps |d| >= lo
    below = torch.nextafter(torch.tensor(lo, dtype=delta.dtype), torch.tensor(0.0, dtype=delta.dtype)).item()
    kept = torch.hardshrink(delta, below) if lo > 0 else delta
    if hi != float("inf"):
        kept = torch.where(kept.abs() <= hi, kept, 0.0)
    return kept.mul_(scale) if scale != 1 else kept


def outlier_trim(job: TensorJob) -> Trim:
    rescale = bool(job.shared.get("rescale"))
    bounds = [outlier_bounds(job, i, float(p["density"]), float(p["gamma"]), rescale) for i, p in enumerate(job.params)]
    return lambda i, _chunk, d: apply_bounds(d, bounds[i])


for _name, _consensus, _summary in (
    ("breadcrumbs", False, "drop the largest (gamma) and smallest deltas, then sum"),
    ("breadcrumbs_ties", True, "breadcrumbs trimming with TIES sign consensus"),
):
    register(task_vector_method(
        _name, trimmed_run(outlier_trim, _consensus), normalize=False, summary=_summary,
        reference="https://arxiv.org/abs/2312.06795", model_params={"gamma": 0.01},
        types={"gamma": Fraction},
    ))
