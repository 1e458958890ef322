"""The table of merge methods: every method, streaming or evaluation-driven, is one entry,
written in its own module in this folder, which registers it on import.

- A streaming method gives `run`: per-tensor math over a TensorJob. It reads its inputs
  chunk by chunk (a first pass for any whole-tensor statistic) and emits the merged tensor
  chunk by chunk; the engine owns reading, threading, casting and writing.
- An evaluated method gives `evaluate`: a whole operator function that scores candidates on
  a task in memory and writes the chosen model; `params` is its settings model and
  `describe` says in one line what it chose.

Each entry becomes the operator `merge.<name>` (merging.operators). Importing this module
imports no torch: the index (`names.py`) says where each entry lives, and `get_method`
imports that module on first use.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from zoo.errors import ZooError

from .names import EVALUATED, INDEX, STREAMING, kind_of, method_names

if TYPE_CHECKING:
    from zoo.registry import OperatorParams
    from zoo.runner import OperatorCall, OperatorOutput

    from ..job import Emit, TensorJob


@dataclass(frozen=True)
class MergeMethod:
    name: str
    summary: str = ""
    reference: str = ""
    version: str = "1"  # the operator's version: bump it when the method's output changes
    needs_base: bool = False  # streaming: without a base, a given base is one more input; evaluated: refused
    optional_base: bool = False  # streaming: a given base is the base (role 'base'), and the method runs without one
    # streaming
    run: Callable[[TensorJob, Emit], None] | None = None
    min_models: int = 1
    max_models: int | None = None
    model_params: dict = field(default_factory=dict)  # per input model: name -> default (or REQUIRED)
    shared_params: dict = field(default_factory=dict)  # whole merge: name -> default
    types: dict = field(default_factory=dict)  # name -> type with its range, beyond merging.settings.COMMON_TYPES
    # settings that depend on each other, checked per tensor before any work:
    # (per-model settings, shared settings, tensor name) -> a refusal (without the method's name) or None
    check: Callable[[list[dict], dict, str], str | None] | None = None
    # evaluated
    evaluate: Callable[[OperatorCall], OperatorOutput] | None = None
    params: type[OperatorParams] | None = None
    describe: Callable[[dict], str] | None = None  # the run's report -> one line for the command line

    def __post_init__(self) -> None:
        if (self.run is None) == (self.evaluate is None):
            raise ValueError(f"merge method {self.name}: give exactly one of run (streaming) or evaluate (evaluated)")
        if self.evaluate is not None and (self.params is None or self.describe is None):
            raise ValueError(f"merge method {self.name}: an evaluated method needs params and describe")

    @property
    def kind(self) -> str:
        return STREAMING if self.run is not None else EVALUATED


_METHODS: dict[str, MergeMethod] = {}


def register(method: MergeMethod) -> MergeMethod:
    """Called by each method's module; the index must list the method with its kind."""
    if kind_of(method.name) != method.kind:
        raise ValueError(f"merge method {method.name} ({method.kind}) is not in the index (merging/methods/names.py)")
    _METHODS[method.name] = method
    return method


def get_method(name: str, kind: str | None = None) -> MergeMethod:
    """The entry for `name` (importing its module), optionally required to be of `kind`."""
    if name not in INDEX:
        raise ZooError(f"unknown merge method {name!r} (known: {', '.join(sorted(INDEX))})")
    if name not in _METHODS:
        importlib.import_module(f"{__name__}.{INDEX[name][1]}")
    method = _METHODS[name]
    if kind is not None and method.kind != kind:
        if method.kind == EVALUATED:
            raise ZooError(f"{name} is an evaluation-driven merge: run it with `zoo merge --method {name} --set "
                           f"task=...` or merging.{name}(), not as a streaming merge")
        raise ZooError(f"{name} is a streaming merge, not an evaluation-driven one")
    return method


def all_methods() -> list[MergeMethod]:
    """Every entry, in table order (imports every method module)."""
    return [get_method(name) for name in INDEX]


__all__ = ["EVALUATED", "STREAMING", "MergeMethod", "all_methods", "get_method", "kind_of", "method_names", "register"]
