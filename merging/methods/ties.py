"""TIES-merging (Yadav et al. 2023): trim each task vector to its largest magnitudes, elect
each element's sign by mass, and average the agreeing entries (a disjoint mean).

TIES keeps exactly k elements: ties at the threshold are taken in order of position.
`rescale: true` (mergekit's) scales the kept deltas back to the task vector's L1 norm.
"""
from __future__ import annotations

import torch

from ..job import TensorJob
from . import register
from .sparsify import abs_deltas, kept_l1, l1_rescale, select, tie_cutoff
from .task_vectors import Trim, task_vector_method, trimmed_run


class TopK:
    """Keep exactly k elements by magnitude: all above the threshold, then those equal to
    it in order of position until k are kept (deterministic, independent of threads).

    The ties kept are those before `cutoff` (a flat position, found once per tensor by
    `tie_cutoff`), so each chunk is one hardshrink: at |x| >= threshold before the cutoff,
    at |x| > threshold after it (a chunk that straddles it is cut in two). Chunks must
    come in order."""

    def __init__(self, threshold: float, cutoff: int = 0, scale: float = 1.0):
        self.threshold = threshold
        self.cutoff = cutoff  # positions before this keep the elements equal to the threshold
        self.scale = scale  # applied to what is kept (mergekit's L1 rescale)
        self.position = 0  # flat position of the next chunk

    def apply(self, delta: torch.Tensor) -> torch.Tensor:
        start, self.position = self.position, self.position + delta.numel()
        if self.threshold == float("inf"):
            return delta.zero_()
        if self.threshold == 0:  # keep everything (dropping a tied zero changes nothing)
            kept = delta
        else:
            split = min(max(self.cutoff - start, 0), delta.numel())
            if split == 0:  # past the cut: most chunks
                kept = torch.hardshrink(delta, self.threshold)
            else:
                below = torch.nextafter(torch.tensor(self.threshold, dtype=delta.dtype),
                                        torch.tensor(0.0, dtype=delta.dtype)).item()  # |x| > below: |x| >= threshold
                kept = torch.hardshrink(delta, below) if split == delta.numel() else \
                    torch.cat([torch.hardshrink(delta[:split], below), torch.hardshrink(delta[split:], self.threshold)])
        return kept.mul_(self.scale) if self.scale != 1 else kept


def magnitude_topk(job: TensorJob, densities: list[float], rescale: bool = False) -> list[TopK | None]:
    """TIES trimming for each model: k = max(1, int(density*n)) largest |delta| (None keeps
    everything); with `rescale`, the kept deltas are scaled to the whole delta's L1 norm."""
    out: list[TopK | None] = [None if d >= 1 else TopK(float("inf"), 0) for d in densities]
    for i, density in enumerate(densities):
        if not (0 < density < 1 and job.numel):
            continue
        k = max(1, int(density * job.numel))
        values = abs_deltas(job, i)
        before = float(values.sum(dtype=torch.float64)) if rescale else 0.0
        ((thr, above),) = select(values, [job.numel - k])
        scale = l1_rescale(before, kept_l1(values, thr, ties_at_lo=k - above)) if rescale else 1.0
        out[i] = TopK(thr, tie_cutoff(values, thr, k - above), scale)
    return out


def magnitude_trim(job: TensorJob) -> Trim:
    kept = magnitude_topk(job, [float(p["density"]) for p in job.params], bool(job.shared.get("rescale")))
    return lambda i, _chunk, d: kept[i].apply(d) if kept[i] is not None else d


register(task_vector_method(
    "ties", trimmed_run(magnitude_trim, consensus=True), normalize=True,
    summary="trim by magnitude, elect sign by mass, disjoint mean", reference="https://arxiv.org/abs/2306.01708",
))
