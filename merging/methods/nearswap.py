"""NearSwap (mergekit's `nearswap`): take the other model's value where it is close to the
base's, keep the base's where they differ: per element, weight = clamp(t / |base - model|,
0, 1) (the difference floored at 1e-6) and merged = weight * model + (1 - weight) * base.
Elementwise, so streamed chunk by chunk with mergekit's exact arithmetic.
"""
from __future__ import annotations

import torch

from ..job import Emit, TensorJob
from ..settings import REQUIRED, NonNegative
from . import MergeMethod, register


def nearswap(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """mergekit's expression, operation for operation (a: base, b: the other model)."""
    absdiff = torch.abs(a - b)
    weight = (t / absdiff.clamp(min=1e-6)).clamp(min=0, max=1)
    return weight * b + (1 - weight) * a


def run(job: TensorJob, emit: Emit) -> None:
    t = float(job.shared["t"])
    for start, count in job.chunks():
        emit(start, nearswap(job.base_chunk(start, count), job.model_chunk(0, start, count), t))


register(MergeMethod(
    "nearswap", run=run, needs_base=True, min_models=1, max_models=1,
    shared_params={"t": REQUIRED}, types={"t": NonNegative},
    summary="per element, the other model's value where it is within about t of the base's, else the base's",
    reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
))
