"""Expansion math stored in the source dtype by block copies must equal, bit for bit, the
dense formulation: gather the whole tensor in the math dtype (float32, float64 for float64),
split it there, round once to the source dtype. The reference below is that formulation,
written plainly (every position computed, index ops only)."""
from __future__ import annotations

import pytest
import torch

from generators.expansion import (FILL, circular, lemon_stream_map, paired, random_map, split, split_gathered)
from generators.gathered import Gathered, Scratch, elements, math_dtype


def _take(t, axis, elem):
    out = t.index_select(axis, elem.clamp(min=0))
    holes = (elem == FILL).nonzero().flatten()
    return out.index_fill_(axis, holes, 0) if len(holes) else out


def reference_gather(t, axis, elem, fill):
    m = t.to(math_dtype(t.dtype))
    if axis is None:
        return m
    out = _take(m, axis, elem)
    holes = (elem == FILL).nonzero().flatten()
    if fill == "mean" and len(holes):
        mean = m.mean(dim=axis, keepdim=True)
        out.index_copy_(axis, holes, mean.expand(*[len(holes) if d == axis else n for d, n in enumerate(out.shape)]))
    return out


def reference_split(t, axis, index, group, mode, g, zero_sum=False):
    """Every position in the math dtype: copies, draws, and each last copy's remainder
    (its value, or 0, plus the negated sum from +0 of the draws of its other copies)."""
    n_old = t.shape[axis] // group
    real = index >= 0
    counts = torch.bincount(index[real], minlength=n_old)
    elem = elements(index, group)
    if mode == "equal":
        if zero_sum:
            return torch.zeros(*[len(elem) if d == axis else n for d, n in enumerate(t.shape)], dtype=t.dtype)
        per = counts.repeat_interleave(group).to(t.dtype)[elem.clamp(min=0)]
        view = [1] * t.dim()
        view[axis] = -1
        return _take(t, axis, elem).div_(per.view(view))
    positions = torch.arange(len(index))
    last = torch.full((n_old,), -1, dtype=torch.long).scatter_reduce_(0, index[real], positions[real], reduce="amax")
    present = (last >= 0).nonzero().flatten()
    last = last[present]
    drawn_units = torch.ones(len(index), dtype=torch.bool)
    drawn_units[last] = False
    drawn = elements(positions[drawn_units], group)
    base = torch.zeros_like(t) if zero_sum else t
    out = _take(base, axis, elem)
    if len(drawn):
        shape = list(out.shape)
        shape[axis] = len(drawn)
        sample = t.reshape(-1)[:: max(1, t.numel() // 65536)].float()
        s = sample.std().item() if sample.numel() > 1 else 1.0
        noise = torch.randn(shape, generator=g, dtype=t.dtype).mul_(s if s > 0 else 1.0)
        out.index_copy_(axis, drawn, noise)
        copied = drawn_units & real
        if copied.any():
            noise_of = out.index_select(axis, elements(positions[copied], group))
            owed = torch.zeros_like(base).index_add_(axis, elements(index[copied], group), noise_of)
            owed = owed.index_select(axis, elements(present, group))
            out.index_add_(axis, elements(last, group), owed.neg_())
    return out


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    assert torch.equal(a.contiguous().view(width), b.contiguous().view(width))


DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
g0 = torch.Generator().manual_seed(7)
CONSUME_MAPS = {  # (unit map along the split axis, elements per unit, units in the source)
    "lemon k=1 + fill": (lemon_stream_map(12, 17), 1, 12),
    "lemon k=2 + fill": (lemon_stream_map(6, 15), 1, 6),
    "circular": (circular(12, 20), 1, 12),
    "random (triples)": (random_map(5, 19, g0), 1, 5),
    "heads circular": (circular(3, 5), 4, 3),
    "heads random": (random_map(3, 7, g0), 4, 3),
    "shuffled pairs": (torch.tensor([2, 0, 1, 3, 0, 2]), 1, 4),
    "shuffled pairs of heads + fill": (torch.tensor([2, 0, 1, 3, 0, FILL, 2]), 3, 4),
    "paired (new layer)": (paired(circular(12, 20)), 1, 12),
    "paired, odd": (paired(torch.arange(7)), 1, 7),
}
PRODUCE = {  # (element map along the produce axis, fill)
    "none": (None, "zero"),
    "lemon mean fill": (lemon_stream_map(9, 23), "mean"),
    "lemon zero fill": (lemon_stream_map(9, 23), "zero"),
    "random": (random_map(9, 13, g0), "zero"),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("produce", PRODUCE)
@pytest.mark.parametrize("consume", CONSUME_MAPS)
@pytest.mark.parametrize("mode,zero_sum", [("random", False), ("random", True), ("equal", False), ("equal", True)])
def test_split_stored_in_the_source_dtype_equals_the_dense_math(dtype, produce, consume, mode, zero_sum):
    index, group, units = CONSUME_MAPS[consume]
    if not zero_sum and "paired" in consume and len(torch.unique(index)) < units:
        pytest.skip("a pairing that leaves units out only exists in cancelling layers")
    elem, fill = PRODUCE[produce]
    t = (torch.randn(9, units * group, generator=torch.Generator().manual_seed(3)) * 0.02 + 0.001).to(dtype)
    axis = 0 if elem is not None else None
    gathered = Gathered(t, axis, elem, fill)
    want = reference_split(reference_gather(t, axis, elem, fill), 1, index, group, mode,
                           torch.Generator().manual_seed(11), zero_sum).to(dtype)
    got = split_gathered(gathered, 1, index, group, mode, torch.Generator().manual_seed(11), zero_sum)
    same_bits(got, want)
    again = split_gathered(gathered, 1, index, group, mode, torch.Generator().manual_seed(11), zero_sum,
                           alloc=Scratch())
    same_bits(again, want)


def test_split_along_the_first_axis_and_a_large_sample():
    """More than 65,536 values (a strided sample sets the spread), split along axis 0."""
    t = torch.randn(700, 130, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    index = lemon_stream_map(700, 1500)
    want = reference_split(t.float(), 0, index, 1, "random", torch.Generator().manual_seed(2)).to(torch.bfloat16)
    same_bits(split(t, 0, index, 1, "random", torch.Generator().manual_seed(2)), want)


def test_stored_gather_with_mean_fill_rounds_once():
    t = torch.randn(9, 5, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    elem = lemon_stream_map(9, 23)
    same_bits(Gathered(t, 0, elem, "mean").stored(), reference_gather(t, 0, elem, "mean").to(torch.bfloat16))
