"""TIES-merging (Yadav et al. 2023): trim each task vector to its largest magnitudes, elect
each element's sign by mass, and average the agreeing entries (a disjoint mean).

TIES keeps exactly k elements: ties at the threshold are taken in order of position.
"""
from __future__ import annotations

import numpy as np
import torch

from ..job import TensorJob
from . import register
from .sparsify import abs_deltas, select
from .task_vectors import Trim, task_vector_method, trimmed_run


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
        ((thr, above),) = select(abs_deltas(job, i), [job.numel - k])
        out[i] = TopK(thr, k - above)
    return out


def magnitude_trim(job: TensorJob) -> Trim:
    kept = magnitude_topk(job, [float(p["density"]) for p in job.params])
    return lambda i, _chunk, d: kept[i].apply(d) if kept[i] is not None else d


register(task_vector_method(
    "ties", trimmed_run(magnitude_trim, consensus=True), normalize=True,
    summary="trim by magnitude, elect sign by mass, disjoint mean", reference="https://arxiv.org/abs/2306.01708",
))
