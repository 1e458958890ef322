"""Merge methods as pure functions on in-memory tensors (for notebooks and tests):

    merged = apply("ties", base, [a, b], weight=[0.5, 0.5], density=0.5)

Per-model parameters take a list (one value per model) or a scalar for all; the rest are
the method's shared parameters. Runs the same method code as the streaming engine.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from pydantic_core import PydanticCustomError

from zoo.errors import ZooError

from .job import TensorJob, in_memory
from .methods import STREAMING, get_method
from .settings import resolve, settings_check


def apply(method_name: str, base: torch.Tensor | None, models: Sequence[torch.Tensor], *, name: str = "tensor",
          seed: int = 0, dtype: torch.dtype = torch.float32, chunk_elements: int | None = None,
          **params: Any) -> torch.Tensor:
    method = get_method(method_name, STREAMING)
    if method.needs_base and base is None:
        raise ZooError(f"{method.name} needs a base tensor")
    ref = base if base is not None else models[0]
    per_model: list[dict] = [{} for _ in models]
    shared: dict = {}
    for key, value in params.items():
        if key in method.model_params:
            values = list(value) if isinstance(value, (list, tuple)) else [value] * len(models)
            if len(values) != len(models):
                raise ZooError(f"{key}: {len(values)} values for {len(models)} models")
            for p, v in zip(per_model, values):
                p[key] = v
        elif key in method.shared_params:
            shared[key] = value
        else:
            raise ZooError(f"{method.name}: unknown parameter {key!r}")
    check = settings_check(method)  # the ranges a merge run checks, checked here too
    try:
        shared, per_model = check.shared(shared), check.per_model(per_model)
    except PydanticCustomError as e:
        raise ZooError(f"{method.name}: {e.message()}") from None
    resolved = [resolve(p, method.model_params, name, 0.0, method.name) for p in per_model]
    shared = resolve(shared, method.shared_params, name, 0.0, method.name)
    problem = method.check(resolved, shared, name) if method.check is not None else None
    if problem:
        raise ZooError(f"{method.name}: {problem}")
    job = TensorJob(
        name=name, shape=tuple(ref.shape),
        base=in_memory(base) if base is not None else None,
        models=[in_memory(m) for m in models],
        params=resolved, shared=shared,
        seed=seed, device=ref.device, dtype=dtype, chunk_elements=chunk_elements,
    )
    out = torch.empty(job.numel, dtype=dtype, device=ref.device)  # the math runs where the tensors are

    def emit(start: int, chunk: torch.Tensor) -> None:
        out[start : start + chunk.numel()] = chunk.reshape(-1)

    method.run(job, emit)
    return out.reshape(ref.shape)
