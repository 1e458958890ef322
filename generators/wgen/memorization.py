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


def wrong_iou(preds: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor,
              exclude_self: bool = False) -> torch.Tensor:
    """p-diff's memorisation similarity (reference `workspace/evaluate.py`): for each row of
    `preds` [G, N], the highest intersection-over-union of its wrongly classified test
    examples with those of any row of `reference` [R, N] (itself excluded when comparing a set
    with itself). Two models with no mistakes at all count as identical (1)."""
    a = (preds != labels).float()
    b = (reference != labels).float()
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1) - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))
    if exclude_self:
        iou.fill_diagonal_(-1.0)
    return iou.max(1).values
