"""Tensors gathered along index maps and stored in their own dtype.

An expansion is mostly copies: each output position copies a source unit, so the bulk of
a resized tensor is block copies of the source, straight into its output, in the source's
dtype - exact in any dtype. A `Gathered` tensor is a source seen through the gather of one
axis (its produce side); it stores itself, or any slices of itself, by block copies, and
makes in the math dtype (`math_dtype`) only what arithmetic needs, each value equal bit
for bit to the same value of a gather done in the math dtype. Maps made of a few runs of
consecutive units (LEMON's and circular maps are) copy run by run; others gather by index.
Outputs come from an `Alloc`, so that a worker can reuse one block of memory (`Scratch`).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

FILL = -1  # index-map entry for positions that copy no single source unit (LEMON's r entries)


def elements(index: torch.Tensor, group: int) -> torch.Tensor:
    """Unit map -> element map along an axis of `group` elements per unit (FILL stays FILL)."""
    if group == 1:
        return index
    elem = index[:, None] * group + torch.arange(group)
    elem[index == FILL] = FILL
    return elem.flatten()


Alloc = Callable[[tuple[int, ...], torch.dtype, torch.device], torch.Tensor]


def fresh(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocate an output tensor (uninitialised: every element is written)."""
    return torch.empty(shape, dtype=dtype, device=device)


class Scratch:
    """An `Alloc` that hands out the same memory again: one worker's outputs, each written
    out before the worker makes the next. Fresh blocks this large come straight from the
    kernel, which faults in and zeroes every 4 KiB page on first touch - more time than
    the copies into them. Not thread-safe: one per worker; CPU only (elsewhere: fresh)."""

    def __init__(self) -> None:
        self._buf: torch.Tensor | None = None

    def __call__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if torch.device(device).type != "cpu":
            return fresh(shape, dtype, device)
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if self._buf is None or self._buf.numel() < nbytes:
            self._buf = None  # (free the old block before taking a larger one)
            self._buf = torch.empty(nbytes, dtype=torch.uint8)
        return self._buf[:nbytes].view(dtype).view(shape)


def _pair_runs(at: torch.Tensor, src: torch.Tensor) -> list[tuple[int, int, int]]:
    """(position, first source, length) of the runs where both `at` and `src` go up by one
    (a run of FILL sources counts as one)."""
    if len(at) == 0:
        return []
    step_ok = (torch.diff(at) == 1) & ((torch.diff(src) == 1) | ((src[1:] == FILL) & (src[:-1] == FILL)))
    breaks = (~step_ok).nonzero().flatten() + 1
    bounds = [0, *breaks.tolist(), len(at)]
    return [(int(at[a]), int(src[a]), b - a) for a, b in zip(bounds[:-1], bounds[1:])]


MAX_RUNS = 64  # beyond this many runs, one indexed gather/scatter beats run-by-run copies


def take(t: torch.Tensor, axis: int, elem: torch.Tensor) -> torch.Tensor:
    """t's slices along `axis` at positions `elem` (FILL -> zeros), a new tensor."""
    shape = list(t.shape)
    shape[axis] = len(elem)
    out = torch.empty(shape, dtype=t.dtype, device=t.device)
    _copy(out, axis, torch.arange(len(elem)), t, elem)
    return out


def _copy(out: torch.Tensor, axis: int, at: torch.Tensor, t: torch.Tensor, elem: torch.Tensor) -> None:
    """out[..., at, ...] = t[..., elem, ...] along `axis` (FILL -> 0). Maps made of a few
    contiguous runs (LEMON's and circular maps are) are copied run by run into place,
    much faster than an element gather, or a concatenation, along an inner axis."""
    runs = _pair_runs(at, elem)
    if len(runs) > MAX_RUNS:
        values = torch.index_select(t, axis, elem.clamp(min=0).to(t.device))
        holes = (elem == FILL).nonzero().flatten()
        if len(holes):
            values.index_fill_(axis, holes.to(t.device), 0)
        put(out, axis, at, values)
        return
    for position, start, length in runs:
        part = out.narrow(axis, position, length)
        if start == FILL:
            part.zero_()
        else:
            part.copy_(t.narrow(axis, start, length))


def _runs(elem: torch.Tensor) -> list[tuple[int, int]]:
    """(position, length) of the runs of consecutive positions in an index vector."""
    if len(elem) == 0:
        return []
    breaks = (torch.diff(elem) != 1).nonzero().flatten() + 1
    bounds = [0, *breaks.tolist(), len(elem)]
    return [(int(elem[a]), b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def put(out: torch.Tensor, axis: int, positions: torch.Tensor, values: torch.Tensor) -> None:
    """out[..., positions, ...] = values along `axis` (cast to out's dtype, rounding once),
    run by run when positions are few runs."""
    runs = _runs(positions)
    if len(runs) > MAX_RUNS:
        out.index_copy_(axis, positions.to(out.device), values.to(out.dtype))
        return
    done = 0
    for start, length in runs:
        out.narrow(axis, start, length).copy_(values.narrow(axis, done, length))
        done += length


def zero_at(out: torch.Tensor, axis: int, positions: torch.Tensor) -> None:
    """out[..., positions, ...] = 0 along `axis`."""
    runs = _runs(positions)
    if len(runs) > MAX_RUNS:
        out.index_fill_(axis, positions.to(out.device), 0)
        return
    for start, length in runs:
        out.narrow(axis, start, length).zero_()


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """Where the arithmetic runs (means, random draws, split remainders, norms): float64 stays
    float64, narrower floats compute in float32 and are rounded once, when stored."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _spread(sample: torch.Tensor) -> float:
    """Spread of a sample of a tensor's values, for the random draws."""
    s = sample.std().item() if sample.numel() > 1 else 1.0
    return s if s > 0 else 1.0


def _flat_index(coords: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """Row-major flat positions of the given coordinates in a tensor of `shape`."""
    flat = torch.zeros_like(coords[0])
    for c, n in zip(coords, shape):
        flat = flat * n + c
    return flat


def _coords(flat: torch.Tensor, shape: tuple[int, ...]) -> list[torch.Tensor]:
    coords = []
    for n in reversed(shape):
        coords.append(flat % n)
        flat = flat // n
    return coords[::-1]


@functools.lru_cache(maxsize=64)
def _sample_positions(shape: tuple[int, ...], src_shape: tuple[int, ...], axis: int | None,
                      elem: bytes | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Where the strided sample of a gathered tensor (every numel // 65536-th value) lies
    in its source: flat source positions; for FILL entries, their mask and flat positions
    in the means. The same for every layer of a model, so computed once per shape and map."""
    numel = math.prod(shape)
    flat = torch.arange(0, numel, max(1, numel // 65536))
    if axis is None:
        return flat, None, None
    coords = _coords(flat, shape)
    along = torch.frombuffer(bytearray(elem), dtype=torch.long)[coords[axis]]
    hole = along == FILL
    coords[axis] = along.clamp(min=0)
    where = _flat_index(coords, src_shape)
    if not hole.any():
        return where, None, None
    coords[axis] = torch.zeros_like(along)
    return where, hole, _flat_index(coords, tuple(1 if d == axis else n for d, n in enumerate(src_shape)))


class Gathered:
    """A source seen through the gather of one axis (or as it is, without one): position j
    along `axis` copies source position elem[j]; FILL positions hold the mean over the
    source positions (fill "mean") or zeros. Nothing is copied until stored."""

    def __init__(self, src: torch.Tensor, axis: int | None = None, elem: torch.Tensor | None = None,
                 fill: str = "zero") -> None:
        self.src, self.axis, self.elem, self.fill = src, axis, elem, fill
        self.math = math_dtype(src.dtype)
        shape = list(src.shape)
        if axis is not None:
            shape[axis] = len(elem)
            self.holes = (elem == FILL).nonzero().flatten()
        self.shape = tuple(shape)
        self._mean: torch.Tensor | None = None

    @property
    def _mean_filled(self) -> bool:
        return self.axis is not None and self.fill == "mean" and len(self.holes) > 0

    def _means(self) -> torch.Tensor:
        """The mean over the source units, in the math dtype (keepdim along the axis)."""
        if self._mean is None:
            self._mean = self.src.to(self.math).mean(dim=self.axis, keepdim=True)
        return self._mean

    def _fill_holes(self, out: torch.Tensor, means: torch.Tensor) -> None:
        holes = self.holes.to(out.device)
        shape = [len(holes) if d == self.axis else n for d, n in enumerate(out.shape)]
        out.index_copy_(self.axis, holes, means.to(out.dtype).expand(*shape))

    def _gather_into(self, out: torch.Tensor, src: torch.Tensor, means: torch.Tensor | None) -> None:
        """out = src gathered along the produce axis (same size on every other axis)."""
        if self.axis is None:
            out.copy_(src)
            return
        _copy(out, self.axis, torch.arange(len(self.elem)), src, self.elem)
        if means is not None:
            self._fill_holes(out, means)

    def stored(self, alloc: Alloc = fresh) -> torch.Tensor:
        """The whole gathered tensor, in the source dtype, in memory from `alloc`."""
        out = alloc(self.shape, self.src.dtype, self.src.device)
        self._gather_into(out, self.src, self._means() if self._mean_filled else None)
        return out

    def store_into(self, out: torch.Tensor, axis: int, at: torch.Tensor, cols: torch.Tensor) -> None:
        """out[..., at, ...] = the gathered tensor's [..., cols, ...] along another axis
        (`cols` without FILL), converted to out's dtype (exact when it is the source's or
        the math dtype): block copies of the source, or one gather when there are many."""
        means = self._means() if self._mean_filled else None
        runs = _pair_runs(at, cols)
        if len(runs) > MAX_RUNS:
            cols = cols.to(self.src.device)
            sub = self.src.index_select(axis, cols).to(out.dtype)
            shape = list(sub.shape)
            if self.axis is not None:
                shape[self.axis] = len(self.elem)
            values = torch.empty(shape, dtype=out.dtype, device=out.device)
            self._gather_into(values, sub, None if means is None else means.index_select(axis, cols))
            put(out, axis, at, values)
            return
        for position, start, length in runs:
            self._gather_into(out.narrow(axis, position, length), self.src.narrow(axis, start, length),
                              None if means is None else means.narrow(axis, start, length))

    def select(self, axis: int, index: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The gathered tensor's slices at `index` along another axis, in `dtype` (default:
        the source's; the math dtype gives exactly a math-dtype gather's values)."""
        shape = list(self.shape)
        shape[axis] = len(index)
        out = torch.empty(shape, dtype=dtype or self.src.dtype, device=self.src.device)
        self.store_into(out, axis, torch.arange(len(index)), index)
        return out

    def scale(self) -> float:
        """Spread of the gathered values in the math dtype, from a strided sample of about
        65,536 of them (the same sample whatever the dtype it is kept in)."""
        if math.prod(self.shape) < 2:
            return 1.0
        elem = None if self.axis is None else self.elem.numpy().tobytes()
        where, hole, in_means = _sample_positions(self.shape, tuple(self.src.shape), self.axis, elem)
        device = self.src.device
        sample = self.src.reshape(-1)[where.to(device)].to(self.math)
        if hole is not None:
            if self._mean_filled:
                sample = torch.where(hole.to(device), self._means().reshape(-1)[in_means.to(device)], sample)
            else:
                sample = sample.masked_fill(hole.to(device), 0)
        return _spread(sample.float())
