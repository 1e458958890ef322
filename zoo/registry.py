"""The operator registry: operators register by dotted name; front ends find them here.

Operator modules register on import; `get_operator` imports the modules of the plugin that
owns a name's prefix (`zoo.plugins`), so the core names no operator package and imports
none at start-up.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ZooError
from .param_types import CheckedParams, explain
from .plugins import load_operators


class OperatorParams(CheckedParams):
    """Base for operator params: unknown keys are errors, values are JSON-serialisable,
    numbers finite and never booleans (`zoo.param_types`); ranges live on the fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class InputSpec:
    """One input role an operator takes, and how many models may play it (`most=None`: no
    upper bound). The runner checks these before any work; pipelines check them at
    `--dry-run`."""

    role: str
    least: int = 1
    most: int | None = 1

    def how_many(self) -> str:
        if self.most == self.least:
            return f"exactly {self.least}"
        if self.most is None:
            return f"{self.least} or more"
        return f"{self.least} to {self.most}"

    def describe(self) -> str:
        return f"{self.how_many()} {self.role!r}"

    def admits(self, n: int) -> bool:
        return n >= self.least and (self.most is None or n <= self.most)


def contract_problem(name: str, specs: Sequence[InputSpec], counts: Mapping[str, int]) -> str | None:
    """The first way `counts` (role -> number of models) breaks the contract `specs`, as one
    line naming the operator, the role, how many it takes and how many it got; None if kept."""
    takes = ", ".join(s.describe() for s in specs) or "no inputs"
    known = {s.role for s in specs}
    for role, n in counts.items():
        if role not in known and n:
            return f"{name} takes no model with role {role!r}, got {n} (it takes: {takes})"
    for s in specs:
        n = counts.get(s.role, 0)
        if not s.admits(n):
            return f"{name} takes {s.how_many()} model(s) with role {s.role!r}, got {n} (it takes: {takes})"
    return None


@dataclass(frozen=True)
class Operator:
    name: str
    version: str
    params: type[OperatorParams]
    fn: Callable[..., Any]
    summary: str = ""
    relation: str | None = None  # the Hub's base_model_relation for outputs (merge, finetune, ...)
    default_role: str = "input"  # the lineage role of an input given without one (pipelines)
    # the roles it takes and how many of each (the contract); None: undeclared, not checked
    # (a plugin written before contracts); () takes no inputs
    inputs: tuple[InputSpec, ...] | None = None
    outputs: Callable[[Any], int] | None = None  # params -> how many models a run makes (None: one)
    deterministic: bool = True  # same inputs and params -> same bytes; False: seeded training (`zoo reproduce` reports differences)

    def __post_init__(self) -> None:
        roles = [s.role for s in self.inputs or ()]
        if len(set(roles)) != len(roles):
            raise ValueError(f"operator {self.name}: a role is declared twice in its inputs")
        if roles and self.default_role not in roles:
            raise ValueError(f"operator {self.name}: default_role {self.default_role!r} is not one of its inputs")

    def check_inputs(self, roles: Sequence[str]) -> None:
        """One-line ZooError when the given input roles break the declared contract."""
        if self.inputs is None:
            return
        problem = contract_problem(self.name, self.inputs, Counter(roles))
        if problem:
            raise ZooError(problem)

    def output_count(self, params: Any) -> int:
        """How many models one run with these (validated) params makes."""
        return 1 if self.outputs is None else self.outputs(params)

    def validate(self, params: dict | None) -> OperatorParams:
        """Params dict -> params model; one-line error naming the bad key and the known ones."""
        try:
            return self.params.model_validate(params or {})
        except ValidationError as e:
            errors = e.errors()  # a misspelt key explains a "missing" one: report it first, then bad values
            err = next((x for x in errors if x["type"] == "extra_forbidden"),
                       next((x for x in errors if x["type"] != "missing"), errors[0]))
            where = ".".join(str(p) for p in err["loc"]) or "params"
            known = ", ".join(self.params.model_fields)
            if err["type"] == "extra_forbidden":
                raise ZooError(f"{self.name}: unknown parameter {where!r} (known: {known})") from None
            raise ZooError(f"{self.name}: {explain(err, self.params)}") from None


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
