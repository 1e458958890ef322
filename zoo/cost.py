"""What running a model costs: FLOPs of one forward pass on one example, counted by torch's
FLOP counter (2 per multiply-add); the stitching measurements count with the same counter."""
from __future__ import annotations

import torch

from .checkpoint import Checkpoint
from .families import family_of


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter():
    """torch's FlopCounterMode, taught the CPU attention kernel: without this, attention
    through scaled_dot_product_attention counts 0 FLOPs on the CPU (and the full count on
    a GPU, whose kernels torch knows)."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops})


def forward_flops(ckpt: Checkpoint) -> int:
    """FLOPs of one example through the model (its family's example input, batch 1)."""
    fam, config = family_of(ckpt)
    model = fam.load(ckpt).float().eval()
    example = fam.example_inputs(config, 1, torch.Generator().manual_seed(0))
    counter = flop_counter()
    with counter, torch.no_grad():
        model(**example)
    return int(counter.get_total_flops())
