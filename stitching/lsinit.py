"""Least-squares initialisation of stitching layers (SN-Net): fit the affine map from the
front anchor's activations to the end anchor's on one batch of real inputs, token by
token; a layer shared by several stitch positions takes the mean of their solutions."""
from __future__ import annotations

from collections import defaultdict

import torch

from .format import StitchConfig


def least_squares(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) minimising ||x W^T + b - y|| over all tokens (x: ... x D_in, y: ... x D_out):
    append a ones column and apply the pseudo-inverse, in float64."""
    x = x.reshape(-1, x.shape[-1]).double()
    y = y.reshape(-1, y.shape[-1]).double()
    a = torch.linalg.pinv(torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)) @ y
    return a[:-1].t().float(), a[-1].float()


def stitch_positions(configs: list[StitchConfig]) -> dict[str, set[tuple[int, int, int, int]]]:
    """Stitching layer key -> the (front anchor, front boundary, end anchor, end boundary)
    pairs it joins; boundary b is the input of block b (b = 0: the embeddings)."""
    out: dict[str, set] = defaultdict(set)
    for c in configs:
        for i, key in enumerate(c.stitches):
            a, b = c.route[i], c.route[i + 1]
            out[key].add((a.anchor, a.stop, b.anchor, b.start))
    return out


@torch.no_grad()
def init_stitches(net, inputs: dict) -> int:
    """Initialise every stitching layer of `net` from one batch; returns how many."""
    positions = stitch_positions(list(net.configs.values()))
    used = {p[0] for ps in positions.values() for p in ps} | {p[2] for ps in positions.values() for p in ps}
    was_training = net.training
    net.eval()
    feats = {a: net.boundary_features(a, inputs) for a in sorted(used)}
    for key, pairs in positions.items():
        fits = [least_squares(feats[fa][fb], feats[ea][eb]) for fa, fb, ea, eb in sorted(pairs)]
        net.stitches[key].set_affine(torch.stack([w for w, _ in fits]).mean(0), torch.stack([b for _, b in fits]).mean(0))
    net.train(was_training)
    return len(positions)
