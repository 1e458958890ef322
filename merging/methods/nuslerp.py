"""NuSLERP (mergekit's `nuslerp`): spherical interpolation of two models, with t from their
weights (t = w2 / (w1 + w2), 0.5 when they sum to about 0). With a base, the two offsets
from it are interpolated and added back (task-vector SLERP); without one, the models
themselves. The sphere is the whole flattened tensor (`nuslerp_flatten`, the default), or
each row (the last axis) of it, or with `nuslerp_row_wise` each column (the first axis).

mergekit's arithmetic, streamed: a first pass gathers each vector's norms and dot product
(float64), a second writes (sin((1-t)theta) v0 + sin(t theta) v1) / sin(theta) in mergekit's
order of operations; nearly collinear vectors are interpolated linearly, as in mergekit.
"""
from __future__ import annotations

import torch
from pydantic import StrictBool

from zoo.errors import ZooError

from ..job import Emit, TensorJob
from ..settings import REQUIRED, Weight
from . import MergeMethod, register

NORM_EPS = 1e-7  # mergekit's clamp on a norm before normalising
COLINEAR_EPS = 1e-8  # collinear when 1 - cos^2 <= eps^2


def interpolation_t(weights: list[float]) -> float:
    total = sum(weights)
    return 0.5 if abs(total) < 1e-6 else weights[1] / total


def angle_terms(t: float, n0: torch.Tensor, n1: torch.Tensor, dot: torch.Tensor, dtype: torch.dtype
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per vector (from float64 norms and dots): sin((1-t)theta), sin(t theta), sin(theta) in
    `dtype`, and whether the pair is collinear (then (1-t) v0 + t v1)."""
    cos = (dot / (n0.clamp(min=NORM_EPS) * n1.clamp(min=NORM_EPS))).clamp(-1, 1)
    colinear = (1 - cos.square()) <= COLINEAR_EPS**2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    return (torch.sin((1 - t) * theta).to(dtype), torch.sin(t * theta).to(dtype), torch.sin(theta).to(dtype),
            colinear)


def combine(t: float, v0: torch.Tensor, v1: torch.Tensor, s0: torch.Tensor, s1: torch.Tensor, s: torch.Tensor,
            colinear: torch.Tensor) -> torch.Tensor:
    """mergekit's expression, elementwise (the coefficient tensors broadcast over v0, v1)."""
    result = (s0 * v0 + s1 * v1) / s
    return torch.where(colinear, (1 - t) * v0 + t * v1, result)


class _Layout:
    """How the flat tensor is cut into the vectors that are interpolated."""

    def __init__(self, job: TensorJob):
        shape, flatten, row_wise = job.shape, bool(job.shared["nuslerp_flatten"]), bool(job.shared["nuslerp_row_wise"])
        self.job = job
        if flatten or len(shape) < 2:
            self.kind, self.count = "whole", 1  # one vector (a 1-D tensor is one either way)
        elif row_wise:
            self.kind, self.count = "columns", job.row  # vectors along the first axis
        else:
            self.kind, self.count = "rows", job.numel // shape[-1]  # vectors along the last axis
        self.last = shape[-1] if shape else 1

    def chunks(self) -> list[tuple[int, int]]:
        if self.kind == "whole" and len(self.job.shape) < 2:
            return [(0, self.job.numel)]
        return self.job.chunks()

    def view(self, flat: torch.Tensor) -> torch.Tensor:
        """A chunk as (vectors in it, length) for rows, (rows, columns) for columns, (1, n) whole."""
        if self.kind == "rows":
            return flat.reshape(-1, self.last)
        if self.kind == "columns":
            return flat.reshape(-1, self.job.row)
        return flat.reshape(1, -1)

    def stats(self, v0: torch.Tensor, v1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b = v0.double(), v1.double()
        dim = 0 if self.kind == "columns" else 1
        return (a * a).sum(dim=dim), (b * b).sum(dim=dim), (a * b).sum(dim=dim)

    def select(self, per_vector: torch.Tensor, start: int, count: int) -> torch.Tensor:
        """The coefficients of the vectors in this chunk, shaped to broadcast over view()."""
        if self.kind == "rows":
            r0 = start // self.last
            return per_vector[r0 : r0 + count // self.last].unsqueeze(1)
        if self.kind == "columns":
            return per_vector.unsqueeze(0)
        return per_vector.reshape(1, 1)


def run(job: TensorJob, emit: Emit) -> None:
    n = len(job.models)
    has_base = job.base is not None
    if n == 1 and not has_base:  # mergekit passes a tensor only one model has through
        for start, count in job.chunks():
            emit(start, job.model_chunk(0, start, count))
        return
    if n != 2:
        raise ZooError(f"nuslerp: {job.name} is in {n} of the models; nuslerp interpolates exactly two")
    t = interpolation_t([float(p["weight"]) for p in job.params])
    layout = _Layout(job)

    def pair(start: int, count: int) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        if has_base:
            base = job.base_chunk(start, count)
            return base, job.delta_chunk(0, start, count, base), job.delta_chunk(1, start, count, base)
        return None, job.model_chunk(0, start, count), job.model_chunk(1, start, count)

    sums = [torch.zeros(layout.count, dtype=torch.float64, device=job.device) for _ in range(3)]
    for start, count in layout.chunks():
        _, v0, v1 = pair(start, count)
        for acc, part in zip(sums, layout.stats(layout.view(v0), layout.view(v1))):
            if layout.kind == "rows":
                r0 = start // layout.last
                acc[r0 : r0 + part.shape[0]] += part
            else:
                acc += part
    n0, n1, dot = sums[0].sqrt(), sums[1].sqrt(), sums[2]
    s0, s1, s, colinear = angle_terms(t, n0, n1, dot, job.dtype)
    for start, count in layout.chunks():
        base, v0, v1 = pair(start, count)
        pick = [layout.select(x, start, count) for x in (s0, s1, s, colinear)]
        out = combine(t, layout.view(v0), layout.view(v1), *pick).reshape(-1)
        emit(start, base.add_(out) if base is not None else out)


register(MergeMethod(
    "nuslerp", run=run, optional_base=True, min_models=2, max_models=2,
    model_params={"weight": REQUIRED}, shared_params={"nuslerp_row_wise": False, "nuslerp_flatten": True},
    types={"weight": Weight, "nuslerp_row_wise": StrictBool, "nuslerp_flatten": StrictBool},
    summary="spherical interpolation of two models (or of their offsets from a base), t from their weights",
    reference="https://github.com/arcee-ai/mergekit/blob/main/docs/merge_methods.md",
))
