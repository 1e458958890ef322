"""Weights as vectors: a fixed tensor order (the checkpoint's), exact flatten/unflatten,
per-tensor normalisation with statistics over the zoo, and fixed-size chunks."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from zoo.errors import ZooError


@dataclass
class WeightLayout:
    names: list[str]
    shapes: list[tuple[int, ...]]
    chunk: int = 256

    @property
    def sizes(self) -> list[int]:
        return [math.prod(s) for s in self.shapes]

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    @property
    def chunks(self) -> int:
        return -(-self.numel // self.chunk)

    @classmethod
    def of(cls, state: dict[str, torch.Tensor], names: list[str] | None = None, chunk: int = 256) -> "WeightLayout":
        names = list(names or state)
        return cls(names, [tuple(state[n].shape) for n in names], chunk)

    def check(self, state: dict[str, torch.Tensor]) -> None:
        for n, s in zip(self.names, self.shapes):
            if n not in state or tuple(state[n].shape) != s:
                got = tuple(state[n].shape) if n in state else "missing"
                raise ZooError(f"weights do not fit the generator's layout: {n} is {got}, expected {s}")

    def flatten(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """One float32 vector in layout order (exact for float32 weights)."""
        self.check(state)
        return torch.cat([state[n].detach().reshape(-1).float() for n in self.names])

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(vector, self.sizes)
        return {n: p.reshape(s).clone() for n, p, s in zip(self.names, parts, self.shapes)}

    def tensor_index(self) -> torch.Tensor:
        """For each element of the flat vector, the index of its tensor."""
        return torch.repeat_interleave(torch.arange(len(self.names)), torch.tensor(self.sizes))

    def to_chunks(self, vectors: torch.Tensor) -> torch.Tensor:
        """[N, numel] -> [N, chunks, chunk], zero-padded."""
        pad = self.chunks * self.chunk - self.numel
        return torch.nn.functional.pad(vectors, (0, pad)).reshape(len(vectors), self.chunks, self.chunk)

    def from_chunks(self, chunks: torch.Tensor) -> torch.Tensor:
        return chunks.reshape(len(chunks), -1)[:, : self.numel]

    def to_json(self) -> dict:
        return {"names": self.names, "shapes": [list(s) for s in self.shapes], "chunk": self.chunk}

    @classmethod
    def from_json(cls, d: dict) -> "WeightLayout":
        return cls(list(d["names"]), [tuple(s) for s in d["shapes"]], int(d["chunk"]))


class Normaliser:
    """Per-tensor mean and std over the zoo, so every layer enters the generator at unit scale."""

    def __init__(self, layout: WeightLayout, mean: torch.Tensor, std: torch.Tensor):
        self.layout, self.mean, self.std = layout, mean, std
        self._index = layout.tensor_index()

    @classmethod
    def fit(cls, layout: WeightLayout, vectors: torch.Tensor) -> "Normaliser":
        idx = layout.tensor_index()
        n = len(layout.names)
        count = torch.bincount(idx, minlength=n).float() * len(vectors)
        mean = torch.zeros(n).index_add_(0, idx, vectors.sum(0)) / count
        sq = torch.zeros(n).index_add_(0, idx, ((vectors - mean[idx]) ** 2).sum(0)) / count
        return cls(layout, mean, sq.sqrt().clamp_min(1e-8))

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        return (vectors - self.mean[self._index]) / self.std[self._index]

    def inverse(self, vectors: torch.Tensor) -> torch.Tensor:
        return vectors * self.std[self._index] + self.mean[self._index]
