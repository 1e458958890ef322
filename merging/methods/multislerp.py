"""Multi-SLERP (mergekit's `multislerp`): barycentric interpolation of any number of models
on a hypersphere. Each whole tensor (or its offset from the base, when a base is given) is
projected onto the unit sphere, the points are averaged with their weights, mapped to the
tangent space at that mean and back (the exponential map), and the result is scaled by the
weighted mean of the norms.

mergekit computes it on the flattened tensors in the merge dtype. Every step is a linear
combination of the inputs, so here one pass gathers their inner products in float64, the
formula runs on the coefficients, and a second pass writes the combination: the same
result in exact arithmetic, streamed, and more accurate than a float32 evaluation.
"""
from __future__ import annotations

import math

import torch
from pydantic import StrictBool

from zoo.errors import ZooError
from zoo.param_types import number

from ..job import Emit, TensorJob
from ..settings import REQUIRED, Weight
from . import MergeMethod, register
from .spherical import gram, write_combination

Eps = number(gt=0, le=1)


def coefficients(g: torch.Tensor, weights: list[float], normalize: bool, eps: float, name: str) -> torch.Tensor:
    """c with result = sum_i c_i x_i, from the Gram matrix g of the x_i (mergekit's formula
    term by term: unit vectors, weighted mean, tangent-space interpolation, exponential map,
    mean norm)."""
    w = torch.tensor(weights, dtype=torch.float64)
    if normalize:
        total = float(w.sum())
        if total == 0:
            raise ZooError(f"multislerp: the weights of {name} sum to 0; cannot normalise them (set "
                           "normalize_weights: false, or change the weights)")
        w = w / total
    norms = g.diagonal().clamp(min=0).sqrt()
    a = w / (norms + eps)  # mean = sum_i w_i u_i = sum_i a_i x_i
    mean_norm = math.sqrt(max(0.0, float(a @ g @ a)))
    if mean_norm < eps:
        if len(weights) == 2:  # mergekit's fallback: linear interpolation
            return w.clone()
        raise ZooError(f"multislerp: the weighted sum of the inputs of {name} is zero (antipodal tensors whose "
                       "weights balance out); use different weights")
    m_hat = a / mean_norm
    dots = (g @ m_hat) / (norms + eps)  # u_i . mean
    # tangent = sum_i w_i (u_i - dots_i mean): coefficients a - (sum_i w_i dots_i) m_hat
    tangent = a - float(w @ dots) * m_hat
    t_norm = math.sqrt(max(0.0, float(tangent @ g @ tangent))) + eps
    result = m_hat * math.cos(t_norm) + tangent * (math.sin(t_norm) / t_norm)
    return result * float(norms @ w)


def run(job: TensorJob, emit: Emit) -> None:
    n = len(job.models)
    use_base = job.base is not None
    if n == 1:  # nothing to interpolate: the model itself
        for start, count in job.chunks():
            emit(start, job.model_chunk(0, start, count))
        return
    weights = [float(p["weight"]) for p in job.params]
    c = coefficients(gram(job, use_base), weights, bool(job.shared["normalize_weights"]),
                     float(job.shared["eps"]), job.name)
    write_combination(job, emit, c, use_base)


register(MergeMethod(
    "multislerp", run=run, optional_base=True, min_models=1,
    model_params={"weight": REQUIRED}, shared_params={"normalize_weights": True, "eps": 1e-8},
    types={"weight": Weight, "normalize_weights": StrictBool, "eps": Eps},
    summary="spherical barycentric interpolation of any number of models (of their offsets from a base, if given)",
    reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
))
