"""What a task provides: batches for training, a loss, and metrics for evaluation."""
from __future__ import annotations

from typing import Any, Iterator

import torch

from ..errors import ZooError


def device_of(model) -> torch.device:
    """Where a model's weights are, so evaluation sends its inputs there (a model trained on
    a GPU is evaluated there); the CPU for callables without parameters."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration, TypeError):
        return torch.device("cpu")


class Task:
    name: str = ""
    modality: str = ""  # "vision" or "language": which families fit
    primary: str = ""  # the headline metric, e.g. "accuracy" or "loss"

    def check(self, family, config: dict) -> None:
        modality = family.modality_for(config)
        if modality != self.modality:
            raise ZooError(f"task {self.name} is for {self.modality} models; {family.name} is a {modality} family")

    def train_examples(self) -> int | None:
        """Size of the training split (None for streams), to turn epochs into steps."""
        return None

    def train_batches(self, config: dict, batch_size: int, generator: torch.Generator) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def loss(self, model, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model, config: dict, split: str = "test") -> dict[str, float]:
        """Metrics of `model` on a split. Implementations are decorated with
        `zoo.determinism.reproducible_method`, so a tiny model's metrics do not depend on the
        machine's thread count."""
        raise NotImplementedError

    def metric_key(self, metric: str) -> str:
        return f"{self.name}/{metric}"
