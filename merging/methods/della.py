"""DELLA (Deep et al. 2024, MagPrune): drop each task-vector element with a probability that
falls with its magnitude, rescale what is kept, then elect by sign and take the disjoint
mean (`della`) or sum (`della_linear`) - mergekit's `della_magprune` in its generalized task
arithmetic.

Magnitudes are ranked within each row (mergekit ranks along axis 1; a vector is one row):
the element of rank r (0 the smallest, n - 1 the largest of the row's n) is kept with
probability

    p(r) = (density - epsilon) + 2 * epsilon * r / (n - 1)

so the row keeps `density` of its elements on average, the smallest with density - epsilon,
the largest with density + epsilon (both must lie inside (0, 1)). A row of one element keeps
it with p = density (mergekit fails there: 0/0). Ties in magnitude are ranked in order of
position (mergekit's sort leaves their order unspecified).

`rescale`: mergekit's L1 matching (true or `l1`, the default: the kept deltas scaled to the
whole task vector's L1 norm), the paper's `inverse` (each kept element divided by its own
p(r), unbiased), or none (false). The draws are seeded by (seed, tensor, model, chunk), so
a merge is reproducible in any thread order; the L1 pass keeps its masks as bits (n/8 bytes
a model), so each row is ranked once.
"""
from __future__ import annotations

import math
import sys
from dataclasses import replace

import numpy as np
import torch

from zoo.param_types import number

from ..job import Emit, TensorJob
from ..settings import Rescale
from . import register
from .dare import rescale_mode
from .sparsify import l1_rescale
from .task_vectors import Trim, task_vector_method, trimmed_run

Epsilon = number(ge=0, lt=0.5)  # half the spread of the keep probabilities around density


def rank_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(n, inner): elements ranked together lie along axis 1 (n of them), `inner` apart; a
    vector (or scalar) is one group."""
    if len(shape) < 2:
        return max(1, math.prod(shape)), 1
    return shape[1], math.prod(shape[2:])


def keep_probabilities(delta: torch.Tensor, shape: tuple[int, ...], density: float, epsilon: float) -> torch.Tensor:
    """p(rank) for each element of a flat chunk of whole rows, in the chunk's dtype, with
    mergekit's arithmetic (rank_norm = (rank - min) / (max - min), then
    (density - epsilon) + rank_norm * 2 * epsilon), evaluated once per rank and placed."""
    n, inner = rank_shape(shape)
    if n == 1:
        return torch.full_like(delta, density)
    rank_norm = (torch.arange(n, dtype=delta.dtype, device=delta.device) / (n - 1)).clamp_(0, 1)
    by_rank = (density - epsilon) + rank_norm * 2 * epsilon
    if (delta.device.type == "cpu" and delta.dtype == torch.float32 and inner == 1 and delta.numel() < 2**31
            and sys.byteorder == "little"):
        # rank by sorting (magnitude bits, position) as one int64 key: unique keys, so any
        # sort gives the stable order, and numpy's (SIMD) sort of keys beats an argsort;
        # the low half of each sorted key is then the position of that rank
        rows = delta.numel() // n
        keys = delta.abs().view(rows, n).numpy().view(np.int32).astype(np.int64)
        keys <<= 32
        keys |= np.arange(n, dtype=np.int64)
        keys.sort(axis=1)
        keys &= 0xFFFFFFFF
        probs = torch.empty(rows, n, dtype=delta.dtype)
        return probs.scatter_(1, torch.from_numpy(keys), by_rank.expand(rows, n)).view(-1)
    mag = delta.abs().view(-1, n, inner)
    order = torch.sort(mag, dim=1, stable=True).indices
    probs = torch.empty_like(mag).scatter_(1, order, by_rank.view(1, n, 1).expand_as(mag).contiguous())
    return probs.view(-1)


def _uniform(job: TensorJob, i: int, chunk: int, start: int, count: int) -> torch.Tensor:
    """The draws for one chunk of model i (tests replace this to inject a known field)."""
    return job.uniform(count, "della", i, chunk)


def magprune_trim(job: TensorJob) -> Trim:
    densities = [float(p["density"]) for p in job.params]
    epsilons = [float(p["epsilon"]) for p in job.params]
    mode = rescale_mode(job.shared.get("rescale"))
    chunks = job.chunks()

    def draw(i: int, c: int, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = keep_probabilities(d, job.shape, densities[i], epsilons[i])
        u = _uniform(job, i, c, chunks[c][0], d.numel())
        if u.dtype == d.dtype:
            return torch.lt(u, probs, out=u), probs  # 1.0 kept, 0.0 dropped, over the draws
        return (u < probs).to(d.dtype), probs

    scales = [1.0] * len(densities)
    stored: list[list | None] = [None] * len(densities)  # model -> per chunk: packed mask bits
    if mode == "l1":
        for i, density in enumerate(densities):
            if density >= 1 or not job.numel:
                continue
            before = after = 0.0
            bits = []
            for c, (start, count) in enumerate(chunks):
                d = job.delta_chunk(i, start, count, job.base_chunk(start, count))
                mask, _ = draw(i, c, d)
                d.abs_()
                before += float(d.sum())  # float32 per chunk (as mergekit), summed in float64
                after += float(torch.dot(d, mask))
                bits.append(np.packbits(mask.to(device="cpu", dtype=torch.bool).numpy()))
            scales[i] = l1_rescale(before, after)
            stored[i] = bits

    def trim(i: int, c: int, d: torch.Tensor) -> torch.Tensor:
        if densities[i] >= 1 or not d.numel():
            return d
        if stored[i] is not None:
            keep = np.unpackbits(stored[i][c], count=d.numel()).astype(bool)
            mask = torch.from_numpy(keep).to(device=d.device, dtype=d.dtype)
            d.mul_(mask)
            return d.mul_(scales[i]) if scales[i] != 1 else d
        mask, probs = draw(i, c, d)
        d.mul_(mask)
        return d.div_(probs) if mode == "inverse" else d

    return trim


def _one_group_per_chunk(inner):
    """Rank groups must not be split across chunks: a vector is one chunk (vectors are small)."""

    def run(job: TensorJob, emit: Emit) -> None:
        if len(job.shape) < 2 and job.numel:
            job = replace(job, chunk_elements=job.numel)
        inner(job, emit)

    return run


def check_epsilon(per_model: list[dict], shared: dict, name: str) -> str | None:
    """mergekit's rule: with density < 1, density - epsilon and density + epsilon inside (0, 1)."""
    for i, p in enumerate(per_model):
        density, epsilon = float(p["density"]), float(p["epsilon"])
        if density < 1 and not (0 < density - epsilon and density + epsilon < 1):
            return (f"epsilon {epsilon:g} with density {density:g} (model {i + 1}, tensor {name}) puts the keep "
                    f"probabilities outside (0, 1): density - epsilon and density + epsilon must lie inside (0, 1)")
    return None


for _name, _consensus, _normalize, _summary in (
    ("della", True, True, "drop by magnitude rank (MagPrune), rescale, elect sign by mass, disjoint mean"),
    ("della_linear", False, False, "drop by magnitude rank (MagPrune), rescale, then sum"),
):
    register(task_vector_method(
        _name, _one_group_per_chunk(trimmed_run(magprune_trim, _consensus)), normalize=_normalize,
        summary=_summary, reference="https://arxiv.org/abs/2406.11617",
        model_params={"epsilon": 0.15}, shared_params={"rescale": True},
        types={"epsilon": Epsilon, "rescale": Rescale}, check=check_epsilon,
    ))
