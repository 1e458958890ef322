"""Merge methods: small functions over a TensorJob, registered by name.

A method reads its inputs chunk by chunk from the job (computing any whole-tensor
statistics in a first pass) and emits the merged tensor chunk by chunk; the engine owns
reading, threading, casting and writing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from zoo.errors import ZooError

from ..job import TensorJob

Emit = Callable[[int, torch.Tensor], None]  # (start element, flat merged chunk)


@dataclass(frozen=True)
class MergeMethod:
    name: str
    run: Callable[[TensorJob, Emit], None]
    needs_base: bool
    min_models: int = 1
    max_models: int | None = None
    model_params: dict = field(default_factory=dict)  # per input model: name -> default (or REQUIRED)
    shared_params: dict = field(default_factory=dict)  # whole merge: name -> default
    summary: str = ""
    reference: str = ""


METHODS: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ZooError(f"unknown merge method {name!r} (known: {', '.join(sorted(METHODS))})") from None


from . import linear, model_stock, slerp, task_arithmetic, widen  # noqa: E402,F401  (register themselves)
