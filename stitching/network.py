"""The torch side of stitched networks (see `format.py` for the format): the stitching
layer and the network that runs one configuration at a time."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.families import Family

from .format import StitchConfig


class StitchLayer(nn.Module):
    """A per-token affine map between two residual widths, optionally with a low-rank
    (LoRA) update on a frozen base weight: y = x W^T + b + s (x A^T) B^T. With B = 0 it is
    exactly the base layer.

    LoRA follows SN-Netv2's reference (ziplab/SN-Netv2 `classification/snnet.py`, loralib's
    `Linear(..., r, lora_alpha=1)`): A kaiming-uniform, B zero, scaling s = alpha / r with
    alpha = 1, only the base weight frozen (loralib sets `weight.requires_grad = False` and
    leaves the bias trainable). `alpha=None` gives s = 1 and `freeze_bias=True` freezes the
    bias too (this package's behaviour before it followed the reference)."""

    def __init__(self, d_in: int, d_out: int, rank: int = 0, alpha: float | None = 1.0, freeze_bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_out, d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.rank = rank
        if rank:
            self.lora_A = nn.Parameter(torch.empty(rank, d_in))
            self.lora_B = nn.Parameter(torch.zeros(d_out, rank))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.scaling = (alpha if alpha is not None else rank) / rank
            self.weight.requires_grad_(False)
            self.bias.requires_grad_(not freeze_bias)

    def set_affine(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(weight)
            self.bias.copy_(bias)

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the equivalent plain affine layer (LoRA folded in)."""
        w = self.weight
        if self.rank:
            w = w + self.scaling * (self.lora_B @ self.lora_A)
        return w.detach(), self.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.linear(x, self.weight, self.bias)
        if self.rank:
            y = y + self.scaling * ((x @ self.lora_A.t()) @ self.lora_B.t())
        return y

@dataclass
class StitchedOutput:
    logits: torch.Tensor

class StitchedNetwork(nn.Module):
    """Anchors plus stitching layers; runs one configuration at a time. `select(id)`
    switches at run time; in training mode `sampler()` (if set) picks the
    configuration of every forward pass."""

    def __init__(self, family: Family, anchors: list[nn.Module], stitch_shapes: dict[str, tuple[int, int]],
                 configs: list[StitchConfig], lora_rank: int = 0):
        super().__init__()
        self.family = family
        self.anchors = nn.ModuleList(anchors)
        self.stitches = nn.ModuleDict({k: StitchLayer(i, o, lora_rank) for k, (i, o) in stitch_shapes.items()})
        self.configs = {c.id: c for c in configs}
        self.selected = max(self.configs)
        self.sampler: Callable[[], int] | None = None

    def select(self, config_id: int) -> "StitchedNetwork":
        if config_id not in self.configs:
            raise ZooError(f"no configuration {config_id} (this network has {len(self.configs)}: "
                           f"{min(self.configs)}..{max(self.configs)})")
        self.selected = config_id
        return self

    def current(self) -> StitchConfig:
        if self.training and self.sampler is not None:
            return self.configs[self.sampler()]
        return self.configs[self.selected]

    def forward(self, **inputs: Any) -> StitchedOutput:
        return StitchedOutput(self.run(self.current(), inputs))

    def run(self, cfg: StitchConfig, inputs: dict,
            record: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        fam = self.family
        hidden = fam.embed(self.anchors[cfg.route[0].anchor], inputs)
        ctx: dict = {}
        for i, seg in enumerate(cfg.route):
            if i:
                hidden = self.stitches[cfg.stitches[i - 1]](hidden)
            anchor = self.anchors[seg.anchor]
            ctx = fam.block_context(anchor, hidden, inputs)
            blocks = fam.blocks(anchor)
            for b in range(seg.start, seg.stop):
                hidden = fam.run_block(blocks[b], hidden, ctx)
        return fam.head(self.anchors[cfg.route[-1].anchor], hidden, ctx)

    def boundary_features(self, anchor: int, inputs: dict) -> list[torch.Tensor]:
        """Hidden states of one anchor at every block boundary: [embeddings, after block
        0, ..., after the last block] (what least-squares stitching init fits)."""
        fam, model = self.family, self.anchors[anchor]
        hidden = fam.embed(model, inputs)
        ctx = fam.block_context(model, hidden, inputs)
        feats = [hidden]
        for block in fam.blocks(model):
            hidden = fam.run_block(block, hidden, ctx)
            feats.append(hidden)
        return feats

