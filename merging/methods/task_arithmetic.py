"""Task arithmetic (Ilharco et al. 2023): base + lambda * sum_i w_i (model_i - base);
negative weights negate a task."""
from __future__ import annotations

from ..job import Emit, TensorJob
from . import register
from .task_vectors import task_vector_method


def run(job: TensorJob, emit: Emit) -> None:
    """base + lam * sum w_i (m_i - base) / div, as one weighted sum: one pass per input."""
    weights = [float(p["weight"]) for p in job.params]
    lam = float(job.shared["lambda"])
    divisor = sum(weights) if job.shared["normalize"] and abs(sum(weights)) >= 1e-8 else 1.0
    coef = [lam * w / divisor for w in weights]
    for start, count in job.chunks():
        acc = job.base_chunk(start, count).mul_(1 - sum(coef))
        for i in range(len(job.models)):
            acc.add_(job.raw_chunk(i, start, count), alpha=coef[i])
        emit(start, acc)


register(task_vector_method(
    "task_arithmetic", run, normalize=False, summary="base + lambda * sum of weighted task vectors",
    reference="https://arxiv.org/abs/2212.04089",
))
