"""Knowledge distillation as a task wrapper, so the shared training loop (`train_model`)
trains stitched networks and learngene students unchanged."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class _Replay:
    """Stands in for the student inside `task.loss`: returns an output computed once."""

    def __init__(self, output: Any):
        self.output = output

    def __call__(self, **_: Any) -> Any:
        return self.output


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2 (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, -1).flatten(0, -2), F.log_softmax(teacher / t, -1).flatten(0, -2),
                    reduction="batchmean", log_target=True) * t * t


class DistilledTask:
    """`loss = (1 - alpha) * task loss + alpha * soft KL to the teacher's logits`.
    Everything else (batches, evaluation, names) is the wrapped task's."""

    def __init__(self, task, teacher: torch.nn.Module, alpha: float = 0.5, temperature: float = 1.0):
        self.task, self.teacher, self.alpha, self.temperature = task, teacher.eval(), alpha, temperature
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def loss(self, model, batch: dict[str, Any]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = model(**inputs)
        hard = self.task.loss(_Replay(out), batch)
        if self.alpha == 0:
            return hard
        with torch.no_grad():
            teacher_logits = follow(self.teacher, batch)(**inputs).logits
        return (1 - self.alpha) * hard + self.alpha * soft_kl(out.logits, teacher_logits, self.temperature)


def follow(teacher: torch.nn.Module, batch: dict[str, Any]) -> torch.nn.Module:
    """The teacher, on the device the training batch is on (the training loop moves the
    student and the batches, not frozen modules the objective holds)."""
    device = next(v.device for v in batch.values() if isinstance(v, torch.Tensor))
    return teacher.to(device)
