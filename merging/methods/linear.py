"""Linear merge (model soups, Wortsman et al. 2022): a weighted average of the models."""
from __future__ import annotations

from zoo.errors import ZooError

from ..job import Emit, TensorJob
from . import MergeMethod, register


def run(job: TensorJob, emit: Emit) -> None:
    weights = [float(p["weight"]) for p in job.params]
    total = sum(weights)
    if job.shared["normalize"] and total == 0:
        raise ZooError(f"linear: weights for {job.name} sum to 0; cannot normalise (set normalize: false)")
    for start, count in job.chunks():
        acc = job.model_chunk(0, start, count).mul_(weights[0])
        for i in range(1, len(job.models)):
            acc.add_(job.model_chunk(i, start, count), alpha=weights[i])
        if job.shared["normalize"]:
            acc.div_(total)
        emit(start, acc)


register(MergeMethod(
    "linear", run=run, needs_base=False, min_models=1,
    model_params={"weight": 1.0}, shared_params={"normalize": True},
    summary="weighted average of the models (uniform soup with default weights)",
    reference="https://arxiv.org/abs/2203.05482",
))
