"""Per-tensor comparison of two checkpoints (`zoo diff`): relative change ||b-a|| / ||a||."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .checkpoint import Checkpoint


@dataclass
class TensorDiff:
    name: str
    status: str  # "same-shape", "only-a", "only-b", "shape-mismatch"
    rel_change: float | None = None
    max_abs: float | None = None
    shape_a: tuple[int, ...] | None = None
    shape_b: tuple[int, ...] | None = None


def diff_checkpoints(a: Checkpoint, b: Checkpoint, progress: Callable[[int], None] | None = None) -> list[TensorDiff]:
    """Compare tensor by tensor in float64 (one tensor pair in memory at a time);
    `progress(1)` after each tensor of A. Front ends order the rows: `zoo.catalog.views.diff`."""
    out: list[TensorDiff] = []
    for name in a.names():
        out.append(_compare(a, b, name))
        if progress is not None:
            progress(1)
    for name in b.names():
        if name not in a.tensors:
            out.append(TensorDiff(name, "only-b", shape_b=b.info(name).shape))
    return out


def _compare(a: Checkpoint, b: Checkpoint, name: str) -> TensorDiff:
    import torch

    ia = a.info(name)
    if name not in b.tensors:
        return TensorDiff(name, "only-a", shape_a=ia.shape)
    ib = b.info(name)
    if ia.shape != ib.shape:
        return TensorDiff(name, "shape-mismatch", shape_a=ia.shape, shape_b=ib.shape)
    ta = a.get(name).to(torch.float64)
    tb = b.get(name).to(torch.float64)
    delta = tb - ta
    norm_a = float(ta.norm())
    norm_d = float(delta.norm())
    rel = norm_d / norm_a if norm_a > 0 else (0.0 if norm_d == 0 else float("inf"))
    max_abs = float(delta.abs().max()) if delta.numel() else 0.0
    return TensorDiff(name, "same-shape", rel, max_abs, ia.shape, ib.shape)
