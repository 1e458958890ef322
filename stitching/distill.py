"""Knowledge distillation as a task wrapper, so the shared training loop (`train_model`)
trains stitched networks and learngene students unchanged."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from zoo.errors import ZooError

# Where a block's self-attention sub-layer sits, as a module whose output is the attention
# output projected back to the residual width, before dropout, residual add and any norm:
# BERT's `attention.output.dense` (its `attention` module already adds the residual and
# normalises), ViT's `attention`, GPT-2's `attn`, Llama's `self_attn`.
ATTENTION_PATHS = ("attention.output.dense", "attention", "attn", "self_attn")


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


def attention_module(block: torch.nn.Module) -> torch.nn.Module:
    """The block's self-attention sub-layer (see ATTENTION_PATHS)."""
    for path in ATTENTION_PATHS:
        try:
            return block.get_submodule(path)
        except AttributeError:
            continue
    raise ZooError(f"no self-attention sub-layer found in {type(block).__name__} (looked for {', '.join(ATTENTION_PATHS)})")


@contextmanager
def capture_attention(blocks: Sequence[torch.nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Collect each block's self-attention output (Learngene Pool's `out_att`, the MHSA
    sub-layer output before the residual add), in the order the blocks run."""
    outs: list[torch.Tensor] = []

    def keep(_module, _inputs, output) -> None:
        outs.append(output[0] if isinstance(output, tuple) else output)

    hooks = [attention_module(b).register_forward_hook(keep) for b in blocks]
    try:
        yield outs
    finally:
        for h in hooks:
            h.remove()
