"""The sparsification math TIES, Model Breadcrumbs, DARE, DELLA and SCE share: |task
vector| of a whole tensor in a reused scratch buffer, exact order statistics over it, and
mergekit's L1 `rescale`.

Magnitude thresholds come from a selection over |delta| - O(n), never a full sort.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import torch

from ..job import TensorJob


def select(values: torch.Tensor, ranks: list[int]) -> list[tuple[float, int]]:
    """(value, number of elements strictly greater) at each ascending rank (0-based) of a
    1-D tensor, left in its order (SCE masks by the very buffer it selects over); a bfloat16
    tensor is modified while this runs and restored.

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
    if values.dtype != torch.bfloat16:  # (numpy has every other float dtype)
        return [(float(v), g) for v, g in _select(values.numpy(), ranks)]
    # bfloat16, which numpy lacks: its bits as int16 keys in the same order (sign-magnitude
    # flipped to two's complement), selected, then flipped back (the flip is its own inverse)
    keys = values.view(torch.int16).numpy()
    _order_keys(keys)
    try:
        picked = _select(keys, ranks)
    finally:
        _order_keys(keys)
    values_back = torch.from_numpy(_order_keys(np.array([k for k, _ in picked], dtype=np.int16)))
    return [(float(v), g) for v, (_, g) in zip(values_back.view(torch.bfloat16).tolist(), picked)]


def _order_keys(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (int16) <-> keys that sort as the values do, in place: negative values
    get their magnitude bits flipped."""
    bits ^= (bits >> 15) & np.int16(0x7FFF)
    return bits


def _select(arr: np.ndarray, ranks: list[int]) -> list[tuple[np.generic, int]]:
    """`select` on a numpy array (any ordered dtype, left unchanged), values as numpy scalars."""
    n = arr.size
    if n <= 1 << 20:
        values = [_kth(arr, r) for r in ranks]
        return [(v, int(np.count_nonzero(arr > v))) for v in values]
    stride = max(1, n // 262144)
    sample = arr[::stride].copy()
    m = sample.size
    margin = int(4 * math.sqrt(m)) + 2  # ~4 standard deviations of a sampled rank
    brackets = [(max(0, int(r * m / n) - margin), min(m - 1, int(r * m / n) + margin)) for r in ranks]
    sample.partition(sorted({i for bracket in brackets for i in bracket}))  # (no sort: numpy's is slow here)
    out = []
    for r, (lo_at, hi_at) in zip(ranks, brackets):
        lo, hi = sample[lo_at], sample[hi_at]
        if lo == hi:  # common for bfloat16 models: few distinct deltas, the bracket is one value
            below, at_most = _count_below_and_at_most(arr, lo)
            if below <= r < at_most:
                out.append((lo, n - at_most))
                continue
        else:
            below, cand = _below_and_inside(arr, lo, hi)
            if below <= r < below + cand.size:
                value = _kth(cand, r - below)
                out.append((value, n - below - int(np.count_nonzero(cand <= value))))
                continue
        # the sample misled us (rare): select over everything
        value = _kth(arr, r)
        out.append((value, int(np.count_nonzero(arr > value))))
    return out


def _kth(arr: np.ndarray, k: int) -> np.generic:
    """The k-th smallest (0-based) element, NaN last, `arr` left as it is. torch's selection:
    numpy's partition slows down ~20x on long runs of equal values, which bfloat16 deltas
    are full of (25 ms instead of 1.5 ms for 250K candidates of a TinyLlama MLP matrix)."""
    return arr.dtype.type(torch.kthvalue(torch.from_numpy(arr), k + 1).values.item())


def _count_below_and_at_most(arr: np.ndarray, value: np.generic) -> tuple[int, int]:
    """(elements < value, elements <= value), in cache-sized blocks."""
    below = at_most = 0
    for s in range(0, arr.size, 1 << 20):
        block = arr[s : s + (1 << 20)]
        below += int(np.count_nonzero(block < value))
        at_most += int(np.count_nonzero(block <= value))
    return below, at_most


def _below_and_inside(arr: np.ndarray, lo: np.generic, hi: np.generic) -> tuple[int, np.ndarray]:
    """(elements < lo, the elements within [lo, hi]), in cache-sized blocks."""
    below, inside = 0, []
    for s in range(0, arr.size, 1 << 20):
        block = arr[s : s + (1 << 20)]
        at_least = block >= lo
        below += block.size - int(np.count_nonzero(at_least))
        inside.append(block[at_least & (block <= hi)])
    return below, np.concatenate(inside)


def tie_cutoff(values: torch.Tensor, threshold: float, ties: int) -> int:
    """The flat position just after the `ties`-th element equal to `threshold` (0 when
    `ties` is 0): keeping the elements equal to the threshold before it, and none after,
    takes the ties in order of position."""
    if ties <= 0:
        return 0
    block_size = 1 << 20
    for s in range(0, values.numel(), block_size):
        equal = values[s : s + block_size] == threshold
        count = int(torch.count_nonzero(equal))
        if count >= ties:
            return s + int(equal.nonzero()[ties - 1, 0]) + 1
        ties -= count
    return values.numel()


def l1_rescale(before: float, after: float, eps: float = 1e-7) -> float:
    """mergekit's `rescale` (RescaleNorm.l1): the factor that gives the kept deltas the L1
    norm of the whole task vector, `before / after`; 1 when either norm is below `eps`."""
    return 1.0 if before < eps or after < eps else before / after


def kept_l1(values: torch.Tensor, lo: float, hi: float = float("inf"), ties_at_lo: int = 0) -> float:
    """The L1 norm of what a magnitude trim keeps, from |delta| (any order): every value with
    lo < v <= hi, plus `ties_at_lo` values equal to lo (or all of them: ties_at_lo < 0)."""
    if lo == float("inf"):
        return 0.0
    total, at_lo = 0.0, 0
    for s in range(0, values.numel(), 1 << 20):  # in blocks: a few MB of temporaries, whatever the size
        block = values[s : s + (1 << 20)]
        inside = (block > lo) if hi == float("inf") else (block > lo) & (block <= hi)
        total += float(torch.where(inside, block, 0.0).sum(dtype=torch.float64))
        if ties_at_lo < 0:
            at_lo += int(torch.count_nonzero(block == lo))
    return total + (at_lo if ties_at_lo < 0 else ties_at_lo) * lo


_scratch = threading.local()
SCRATCH_KEPT = 16 * 1024 * 1024  # elements a scratch buffer may keep beyond 4x what a tensor needs


def _buffer(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A per-thread float buffer reused across tensors: fresh memory costs page faults on
    first touch (slow in VMs), reused memory does not. One much larger than needed (the
    embeddings' after them, 4x and more) is given back: kept, it held a quarter of a GB
    through the rest of a 1B merge."""
    buf = getattr(_scratch, "buf", None)
    if (buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device
            or buf.numel() > max(4 * numel, SCRATCH_KEPT)):
        _scratch.buf = buf = None  # drop the old one before allocating the new one
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
