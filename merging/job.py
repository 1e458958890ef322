"""One output tensor's merge: where its inputs come from, its resolved parameters, and
row-aligned chunks so that methods stream large tensors instead of holding them whole."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

if TYPE_CHECKING:
    from zoo.families import Family

# Elements per chunk: 512K float32 = 2 MB per input slice, so the several passes a method
# makes over a chunk run mostly from cache (3x faster than 16 MB chunks here; 256K was
# no different within noise).
CHUNK_ELEMENTS = 512 * 1024
# On a GPU the cost is per kernel launch, not cache: 16M elements (64 MB float32) per slice.
GPU_CHUNK_ELEMENTS = 16 * 1024 * 1024

# (start, count) -> a fresh flat tensor (methods may modify it in place), any dtype
Source = Callable[[int, int], torch.Tensor]
# what a streaming method calls with each merged chunk: (start element, flat merged chunk)
Emit = Callable[[int, torch.Tensor], None]


@dataclass
class TensorJob:
    name: str
    shape: tuple[int, ...]
    base: Source | None
    models: list[Source]
    params: list[dict]  # per model, resolved for this tensor
    shared: dict  # method-wide parameters, resolved for this tensor
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32  # math precision
    chunk_elements: int | None = None  # default: CHUNK_ELEMENTS on the CPU, GPU_CHUNK_ELEMENTS on a GPU
    family: "Family | None" = None  # the models' family (tensor naming), None: generic conventions

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def row(self) -> int:
        """Elements per leading-axis row (1 for scalars and vectors)."""
        return self.numel // self.shape[0] if len(self.shape) >= 2 and self.shape[0] else 1

    def chunks(self) -> list[tuple[int, int]]:
        """(start, count) ranges covering the flattened tensor, each a whole number of rows."""
        size = self.chunk_elements or (GPU_CHUNK_ELEMENTS if self.device.type == "cuda" else CHUNK_ELEMENTS)
        rows_per = max(1, size // max(1, self.row))
        step = rows_per * self.row
        return [(s, min(step, self.numel - s)) for s in range(0, self.numel, step)] or [(0, 0)]

    def _load(self, src: Source, start: int, count: int) -> torch.Tensor:
        return src(start, count).to(device=self.device, dtype=self.dtype)

    def raw_chunk(self, i: int, start: int, count: int) -> torch.Tensor:
        """Model i's slice for mixed-dtype in-place arithmetic: in its stored dtype when that
        casts exactly to the math dtype (bfloat16 into float32: the same numbers without a
        cast pass), else cast to the math dtype first, as `model_chunk` (and mergekit) do."""
        chunk = self.models[i](start, count).to(device=self.device)
        if torch.promote_types(chunk.dtype, self.dtype) != self.dtype:
            return chunk.to(self.dtype)
        return chunk

    def base_chunk(self, start: int, count: int) -> torch.Tensor:
        assert self.base is not None
        return self._load(self.base, start, count)

    def model_chunk(self, i: int, start: int, count: int) -> torch.Tensor:
        return self._load(self.models[i], start, count)

    def delta_chunk(self, i: int, start: int, count: int, base: torch.Tensor) -> torch.Tensor:
        return self.model_chunk(i, start, count).sub_(base)

    def _seed(self, key: tuple) -> int:
        digest = hashlib.sha256(repr((self.seed, self.name, key)).encode()).digest()
        return int.from_bytes(digest[:8], "little") & (2**63 - 1)

    def generator(self, *key: object) -> torch.Generator:
        """A generator seeded by (seed, tensor name, key): reproducible in any thread order."""
        g = torch.Generator(device=self.device)
        g.manual_seed(self._seed(key))
        return g

    def uniform(self, count: int, *key: object) -> torch.Tensor:
        """`count` draws from U[0, 1) in the math dtype, seeded by (seed, tensor name, key).
        On the CPU, in float32 or float64, they come from numpy's PCG64 (1.6x torch's
        Mersenne twister here: DARE and DELLA draw one number per element); otherwise from
        torch's generator for the device."""
        if self.device.type != "cpu" or self.dtype not in (torch.float32, torch.float64):
            # (rounding float32 draws to a half type could give 1.0: torch draws those itself)
            return torch.rand(count, generator=self.generator(*key), device=self.device, dtype=self.dtype)
        rng = np.random.Generator(np.random.PCG64(self._seed(key)))
        return torch.from_numpy(rng.random(count, dtype=np.float32 if self.dtype == torch.float32 else np.float64))


def in_memory(tensor: torch.Tensor) -> Source:
    """A Source over an in-memory tensor (for the pure-function API and tests)."""
    flat = tensor.reshape(-1)
    return lambda start, count: flat[start : start + count].clone()
