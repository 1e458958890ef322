"""The operator registry: operators register by dotted name; front ends find them here.

Operator modules register on import; `get_operator` imports the modules of the plugin that
owns a name's prefix (`zoo.plugins`), so the core names no operator package and imports
none at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ZooError
from .plugins import load_operators


class OperatorParams(BaseModel):
    """Base for operator params: unknown keys are errors, values are JSON-serialisable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class InputSpec:
    """One input role an operator takes, and how many models may play it (`most=None`: no
    upper bound). The runner checks these before any work; pipelines check them at
    `--dry-run`."""

    role: str
    least: int = 1
    most: int | None = 1

    def describe(self) -> str:
        if self.most == self.least:
            return f"exactly {self.least} {self.role}"
        if self.most is None:
            return f"{self.least} or more {self.role}"
        return f"{self.least} to {self.most} {self.role}"


@dataclass(frozen=True)
class Operator:
    name: str
    version: str
    params: type[OperatorParams]
    fn: Callable[..., Any]
    summary: str = ""
    relation: str | None = None  # the Hub's base_model_relation for outputs (merge, finetune, ...)
    default_role: str = "input"  # the lineage role of an input given without one (pipelines)
    inputs: tuple[InputSpec, ...] = ()  # the roles it takes and how many of each (the contract)

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
        load_operators(name.split(".", 1)[0])
    try:
        return _OPERATORS[name]
    except KeyError:
        raise ZooError(f"unknown operator {name!r} (known: {', '.join(sorted(all_operators())) or 'none'})") from None


def all_operators() -> dict[str, Operator]:
    """Every operator of every installed plugin."""
    load_operators()
    return dict(_OPERATORS)
