"""Are generated models copies? Compare each generated model's predictions with its
nearest training checkpoint, against how close training checkpoints are to each other."""
from __future__ import annotations

import torch


def nearest_agreement(preds: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """For each row of `preds` [G, N] (predicted labels), the highest fraction of identical
    predictions with any row of `reference` [R, N] (itself excluded when comparing a set
    with itself)."""
    agree = (preds.unsqueeze(1) == reference.unsqueeze(0)).float().mean(-1)
    if exclude_self:
        agree.fill_diagonal_(-1.0)
    return agree.max(1).values


def nearest_distance(vectors: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """For each weight vector, the L2 distance to the nearest reference vector."""
    dist = torch.cdist(vectors, reference)
    if exclude_self:
        dist.fill_diagonal_(float("inf"))
    return dist.min(1).values
