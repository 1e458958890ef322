"""LEMON (Wang et al., ICLR 2024): lossless model expansion, and its learning-rate schedule.

    from generators.lemon import expand
    entry = expand("gpt2-small", hidden_size=128, num_layers=8, out="gpt2-wide")

The expansion itself lives in `expansion.py` (shared with bert2BERT's FPI and AKI and with
Net2Net); this module is the LEMON-facing API.
"""
from __future__ import annotations

import math
from typing import Callable

from zoo.catalog import Catalog, Parent
from zoo.runner import run_operator
from zoo.schedules import register_schedule


def expand(ref: str | int, *, catalog: Catalog | None = None, method: str = "lemon", out: str | None = None,
           hidden_size: int | None = None, num_layers: int | None = None, num_heads: int | None = None,
           intermediate_size: int | None = None, seed: int = 0, depth_init: str | None = None, tags=()):
    """Expand a catalogued model; returns the registered entry (lineage role `source`).
    `depth_init` (LEMON only): "cancel" (default) or "zero", see `expand.LemonParams`."""
    catalog = catalog or Catalog()
    params = {"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
              "intermediate_size": intermediate_size, "seed": seed}
    if depth_init is not None:
        params["depth_init"] = depth_init
    return run_operator(catalog, f"expand.{method}", [Parent(ref, "source")], params, out, tags=tags).entry


def schedule(total_steps: int, peak_lr: float, warmup_steps: int = 0, decay_fraction: float = 0.5,
             final_ratio: float = 0.1) -> Callable[[int], float]:
    """LEMON's tailored schedule for training an expanded model: the same peak learning
    rate as training from scratch, but a faster decay - cosine down to `final_ratio` x peak
    over the first `decay_fraction` of training, then flat. Returns step -> lr."""
    decay_steps = max(1, int(total_steps * decay_fraction) - warmup_steps)

    def lr(step: int) -> float:
        if step < warmup_steps:
            return peak_lr * (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return peak_lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    return lr


register_schedule("lemon", lambda steps, lr, warmup_steps: schedule(steps, lr, warmup_steps=warmup_steps))
