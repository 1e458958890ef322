"""`pytext`: byte-level next-token prediction on Python's own standard-library sources.
Training reads a fixed set of packages; evaluation is a fixed set of windows from other
packages (never trained on). Metrics: loss (nats per byte) and perplexity."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from ..determinism import reproducible_method
from ..errors import ZooError
from ..textdata import python_source_bytes
from .registry import register_task
from .base import Task, device_of

TRAIN_PACKAGES = ["json", "csv", "argparse", "collections", "email", "logging", "http", "asyncio"]
EVAL_PACKAGES = ["textwrap", "shlex", "string", "fractions", "difflib"]
SEQ_LEN = 64
EVAL_WINDOWS = 64


@lru_cache(maxsize=2)
def _tokens(which: str) -> torch.Tensor:
    data = python_source_bytes(TRAIN_PACKAGES if which == "train" else EVAL_PACKAGES,
                               max_bytes=3_000_000 if which == "train" else 400_000)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


class PyText(Task):
    modality = "language"
    primary = "loss"

    def __init__(self, variant: str | None = None):
        if variant:
            raise ZooError("pytext takes no variant")
        self.name = "pytext"

    def check(self, family, config: dict) -> None:
        super().check(family, config)
        if config.get("vocab_size", 0) < 256:
            raise ZooError(f"pytext is byte-level: the model needs vocab_size >= 256 (has {config.get('vocab_size')})")
        if family.masked_encoder:
            raise ZooError(f"pytext is next-token prediction; {family.name} is a masked encoder "
                           f"(register an MLM task instead)")

    def train_batches(self, config: dict, batch_size: int, generator: torch.Generator) -> Iterator[dict[str, Any]]:
        tokens = _tokens("train")
        while True:
            starts = torch.randint(0, len(tokens) - SEQ_LEN - 1, (batch_size,), generator=generator)
            yield {"input_ids": torch.stack([tokens[s : s + SEQ_LEN] for s in starts])}

    def loss(self, model, batch: dict[str, Any]) -> torch.Tensor:
        ids = batch["input_ids"]
        logits = model(input_ids=ids).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    @reproducible_method
    @torch.no_grad()
    def evaluate(self, model, config: dict, split: str = "test") -> dict[str, float]:
        tokens = _tokens("eval")
        stride = (len(tokens) - SEQ_LEN - 1) // EVAL_WINDOWS
        windows = torch.stack([tokens[i * stride : i * stride + SEQ_LEN] for i in range(EVAL_WINDOWS)])
        windows = windows.to(device_of(model))
        losses = [self.loss(model, {"input_ids": windows[i : i + 16]}).item() for i in range(0, EVAL_WINDOWS, 16)]
        loss = sum(losses) / len(losses)
        return {"loss": loss, "ppl": math.exp(loss)}


register_task("pytext", PyText)
