"""What the evaluation-driven merges share: scoring candidate weights in memory on a task,
and writing the chosen merge.

Candidates are scored in one family module, their state dicts loaded into it in turn; only
the chosen model is written, through the merge engine (the same math its plain merge uses)
or the core writer. Each method keeps its search report with the run (`zoo show --json` ->
run.notes.evaluated_merge); the chosen model's metrics on the scored split are stored on
its entry.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from zoo.checkpoint import Checkpoint
from zoo.errors import ZooError
from zoo.runner import OperatorCall
from zoo.training import for_task, split_metrics

from .engine import merge_checkpoints
from .methods import STREAMING, get_method
from .spec import MergeParams


def higher_is_better(task) -> bool:
    """Accuracy-like headline metrics go up; loss-like ones (loss, perplexity) go down."""
    return task.primary not in ("loss", "perplexity")


class Scorer:
    """One family module for a task; scores state dicts by loading them into it."""

    def __init__(self, ckpt: Checkpoint, task_spec: str):
        self.fam, self.config, self.task = for_task(ckpt, task_spec)
        self.model = self.fam.load(ckpt).float().eval()
        self.keys = set(self.model.state_dict())
        self.higher = higher_is_better(self.task)

    def check_names(self, names, where: str) -> None:
        unknown = sorted(set(names) - self.keys)
        if unknown:
            raise ZooError(f"{where}: tensor {unknown[0]!r} is not a parameter of the {self.fam.name} model "
                           f"({len(unknown)} such); evaluated merging needs Hugging Face tensor names")

    def load(self, state: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.model.load_state_dict(state, strict=False)

    def score(self, state: Mapping[str, torch.Tensor] | None, split: str, task=None) -> float:
        """The task's headline metric on `split` (for `state`, or the loaded weights)."""
        if state is not None:
            self.load(state)
        task = task or self.task
        return float(task.evaluate(self.model, self.config, split)[task.primary])

    def metrics_of(self, written, split: str) -> dict[str, float]:
        """Every metric of the checkpoint as written (its dtype included), catalog-named."""
        self.load(state_of(Checkpoint.open(written.path)))
        return split_metrics(self.task, split, self.task.evaluate(self.model, self.config, split))

    def better(self, a: float, b: float) -> bool:
        """a strictly better than b."""
        return a > b if self.higher else a < b


def state_of(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """All tensors; floating ones in float32 (the math precision)."""
    out = {}
    for n in ckpt.names():
        t = ckpt.get(n)
        out[n] = t.float() if t.is_floating_point() else t
    return out


def base_and_models(call: OperatorCall) -> tuple[int, list[int]]:
    """Input positions: the one `base` and the others (the runner has checked the counts
    against the operator's declared inputs)."""
    roles = [p.role for p, _ in call.inputs]
    base = roles.index("base")
    return base, [i for i in range(len(roles)) if i != base]


def write_merge(call: OperatorCall, method: str, base: Checkpoint | None, models: list[Checkpoint],
                weights: list[float], parameters: dict | None = None):
    """Write the chosen merge through the streaming engine (the same math a plain merge uses)."""
    params = MergeParams(parameters=parameters or {}, model_parameters=[{"weight": w} for w in weights])
    writer, _ = merge_checkpoints(get_method(method, STREAMING), base, models, params, call.writer,
                                  device=call.options.get("device", "cpu"), progress=call.progress)
    return writer.result
