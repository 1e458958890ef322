"""Sparsifying task vectors: magnitude trimming (TIES), outlier-and-small trimming
(Model Breadcrumbs), and random drop with rescaling (DARE).

Magnitude thresholds come from a selection over |delta| - O(n), never a full sort. TIES
keeps exactly k elements (ties at the threshold taken in order of position); breadcrumbs
keeps every element inside its two thresholds.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import torch

from ..job import TensorJob


def _select(values: torch.Tensor, ranks: list[int]) -> list[tuple[float, int]]:
    """(value, number of elements strictly greater) at each ascending rank (0-based) of a
    1-D tensor we own (it may be reordered).

    On the CPU: estimate a narrow bracket around each rank from a strided sample, then in
    one blocked pass count the elements below it and collect the few inside it, and select
    exactly among those (vectorised, cache-sized passes instead of an O(n) select with
    random access over the whole tensor); a missed bracket falls back to a full selection.
    On a GPU: one radix sort (much faster there than `kthvalue`), read at each rank."""
    n = values.numel()
    if values.device.type != "cpu":
        ordered = values.sort().values
        picked = ordered[torch.tensor(ranks, device=values.device)]
        greater = n - torch.searchsorted(ordered, picked, right=True)
        return [(float(v), int(g)) for v, g in zip(picked.tolist(), greater.tolist())]
    arr = values.numpy()
    if n <= 1 << 20:
        arr.partition(ranks)
        return [(float(arr[r]), int(np.count_nonzero(arr > arr[r]))) for r in ranks]
    stride = max(1, n // 262144)
    sample = np.sort(arr[::stride])
    m = sample.size
    margin = int(4 * math.sqrt(m)) + 2  # ~4 standard deviations of a sampled rank
    out = []
    for r in ranks:
        pos = r * m / n
        lo = sample[max(0, int(pos) - margin)]
        hi = sample[min(m - 1, int(pos) + margin)]
        below, inside = 0, []
        for s in range(0, n, 1 << 20):  # cache-sized blocks
            block = arr[s : s + (1 << 20)]
            at_least = block >= lo
            below += block.size - int(np.count_nonzero(at_least))
            inside.append(block[at_least & (block <= hi)])
        cand = np.concatenate(inside)
        if below <= r < below + cand.size:
            k = r - below
            cand.partition(k)
            value = cand[k]
            out.append((float(value), n - below - int(np.count_nonzero(cand <= value))))
        else:  # the sample misled us (rare): select over everything
            value = np.partition(arr, r)[r]
            out.append((float(value), int(np.count_nonzero(arr > value))))
    return out


_scratch = threading.local()


def _buffer(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A per-thread float buffer reused across tensors: fresh memory costs page faults on
    first touch (slow in VMs), reused memory does not."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
        _scratch.buf = buf = None  # drop the old one before allocating the larger one
        _scratch.buf = buf = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel]


def abs_deltas(job: TensorJob, i: int) -> torch.Tensor:
    """|model_i - base| for the whole tensor, flattened, in this thread's scratch buffer
    (valid until the next call on this thread)."""
    out = _buffer(job.numel, job.dtype, job.device)
    for start, count in job.chunks():
        base = job.base_chunk(start, count)
        torch.sub(job.raw_chunk(i, start, count), base, out=out[start : start + count]).abs_()
    return out


class TopK:
    """Keep exactly k elements by magnitude: all above the threshold, then those equal to
    it in order of position until k are kept (deterministic, independent of threads)."""

    def __init__(self, threshold: float, ties: int):
        self.threshold = threshold
        self.ties = ties  # how many elements equal to the threshold still to keep

    def apply(self, delta: torch.Tensor) -> torch.Tensor:
        if self.threshold == float("inf"):
            return delta.zero_()
        kept = torch.hardshrink(delta, self.threshold) if self.threshold > 0 else delta.clone()
        if self.ties > 0:
            if delta.device.type == "cpu":
                arr = delta.numpy()
                tied = torch.from_numpy(np.flatnonzero(np.abs(arr) == arr.dtype.type(self.threshold))[: self.ties])
            else:
                tied = (delta.abs() == self.threshold).nonzero().flatten()[: self.ties]
            kept[tied] = delta[tied]
            self.ties -= len(tied)
        return kept


def magnitude_topk(job: TensorJob, densities: list[float]) -> list[TopK | None]:
    """TIES trimming for each model: k = max(1, int(density*n)) largest |delta| (None keeps
    everything)."""
    out: list[TopK | None] = [None if d >= 1 else TopK(float("inf"), 0) for d in densities]
    for i, density in enumerate(densities):
        if not (0 < density < 1 and job.numel):
            continue
        k = max(1, int(density * job.numel))
        ((thr, above),) = _select(abs_deltas(job, i), [job.numel - k])
        out[i] = TopK(thr, k - above)
    return out


def outlier_bounds(job: TensorJob, i: int, density: float, gamma: float) -> tuple[float, float] | None:
    """Breadcrumbs: drop the top `gamma` fraction by magnitude, then the smallest, keeping
    `density` of the elements: keep lo <= |d| <= hi."""
    if density >= 1:
        return None
    n = job.numel
    keep = int(density * n)
    n_top = int(gamma * n)
    n_bottom = max(0, n - keep - n_top)
    if keep <= 0:
        return (float("inf"), float("inf"))
    (lo, _), (hi, _) = _select(abs_deltas(job, i), [n_bottom, n_bottom + keep - 1])
    return (lo, hi)


def apply_bounds(delta: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    """Zero the elements with |d| outside [lo, hi] (float ops only: boolean tensors are slow)."""
    if bounds is None:
        return delta
    lo, hi = bounds
    if lo == float("inf"):
        return delta.zero_()
    # hardshrink keeps |d| > lambda; the largest value below lo (in d's dtype) keeps |d| >= lo
    below = torch.nextafter(torch.tensor(lo, dtype=delta.dtype), torch.tensor(0.0, dtype=delta.dtype)).item()
    kept = torch.hardshrink(delta, below) if lo > 0 else delta
    if hi != float("inf"):
        kept = torch.where(kept.abs() <= hi, kept, 0.0)
    return kept


def dare_mask(job: TensorJob, i: int, chunk: int, count: int, density: float) -> torch.Tensor:
    """Bernoulli(density) keep-mask for one chunk, seeded by (tensor, model, chunk)."""
    g = job.generator("dare", i, chunk)
    return (torch.rand(count, generator=g, device=job.device, dtype=job.dtype) < density).to(job.dtype)


def dare_l1_scale(job: TensorJob, i: int, density: float) -> float:
    """mergekit's rescale: match the L1 norm of the delta before and after dropping."""
    before = after = 0.0
    for c, (start, count) in enumerate(job.chunks()):
        base = job.base_chunk(start, count)
        d = job.delta_chunk(i, start, count, base).abs_()
        before += float(d.sum(dtype=torch.float64))
        after += float((d * dare_mask(job, i, c, count, density)).sum(dtype=torch.float64))
    if before < 1e-7 or after < 1e-7:
        return 1.0
    return before / after
