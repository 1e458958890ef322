"""The operator registry: operators register by dotted name; front ends find them here.

Operator packages register themselves on import; `get_operator` imports the package that
owns a name's prefix lazily, so the core never imports an operator package at start-up.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ZooError

# name prefix -> package that registers operators with that prefix
PACKAGES = {
    "merge": "merging",
    "expand": "generators",
    "generate": "generators",
    "stitch": "stitching",
    "learngene": "stitching",
    "init": "zoo.training",
    "train": "zoo.training",
}


class OperatorParams(BaseModel):
    """Base for operator params: unknown keys are errors, values are JSON-serialisable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Operator:
    name: str
    version: str
    params: type[OperatorParams]
    fn: Callable[..., Any]
    summary: str = ""
    relation: str | None = None  # the Hub's base_model_relation for outputs (merge, finetune, ...)

    def validate(self, params: dict | None) -> OperatorParams:
        """Params dict -> params model; one-line error naming the bad key and the known ones."""
        try:
            return self.params.model_validate(params or {})
        except ValidationError as e:
            errors = e.errors()  # a misspelt key explains a "missing" one: report it first
            err = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
            where = ".".join(str(p) for p in err["loc"]) or "params"
            known = ", ".join(self.params.model_fields)
            if err["type"] == "extra_forbidden":
                raise ZooError(f"{self.name}: unknown parameter {where!r} (known: {known})") from None
            raise ZooError(f"{self.name}: bad parameter {where!r}: {err['msg']}") from None


_OPERATORS: dict[str, Operator] = {}


def register(op: Operator) -> Operator:
    if op.name in _OPERATORS and _OPERATORS[op.name].fn is not op.fn:
        raise ValueError(f"operator {op.name} registered twice")
    _OPERATORS[op.name] = op
    return op


def get_operator(name: str) -> Operator:
    if name not in _OPERATORS:
        package = PACKAGES.get(name.split(".", 1)[0])
        if package:
            importlib.import_module(package)
    try:
        return _OPERATORS[name]
    except KeyError:
        raise ZooError(f"unknown operator {name!r} (known: {', '.join(sorted(all_operators())) or 'none'})") from None


def all_operators() -> dict[str, Operator]:
    """Every operator, importing each operator package once."""
    for package in sorted(set(PACKAGES.values())):
        try:
            importlib.import_module(package)
        except ImportError:  # an optional package missing its extras
            continue
    return dict(_OPERATORS)


def load_frontend(prefix: str):
    """The command-line front end module of the package owning `prefix` (e.g. merging.frontend)."""
    return importlib.import_module(f"{PACKAGES[prefix]}.frontend")
