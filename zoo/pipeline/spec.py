"""Variant-building pipelines (`zoo build PIPELINE.yaml`): named steps, each a registered
operator (or `eval` / `select` / `push`) with params and inputs (catalog refs or earlier steps),
run as a DAG. Everything is checked before anything runs; steps reuse cached runs (same
operator, version, params and input digests), so an interrupted build resumes where it
stopped; a failed step stops only its descendants; `grid` sweeps a step's params.

    name: demo
    steps:
      base:   {op: init.random, params: {family: vit, config: {hidden_size: 24, ...}}}
      tuned:  {op: train.finetune, inputs: [base], params: {task: digits, steps: 100}}
      merged: {op: merge.task_arithmetic, inputs: [{ref: base, role: base}, tuned],
               grid: {lambda: [0.5, 1.0]}}
      scored: {op: eval, inputs: [merged], params: {task: digits}}
      best:   {op: select, inputs: [scored], params: {metric: digits/accuracy}}
      ship:   {op: push, inputs: [best], params: {repo: "my-org/{name}"}}

Each operator step's inputs are checked against the operator's declared inputs (roles and
counts) before anything runs. An input step that can make several models (a grid, a
multi-output operator, a Pareto `select`) given where the operator takes one is an error,
never a silent pick of the first, unless the step says `for_each: INPUT`: it then runs once
per model of that input (per grid point), each run given that one model, with outputs
`{pipeline}-{step}-{i}`:

      grown:  {op: expand.lemon, inputs: [merged], for_each: merged, params: {num_layers: 4}}
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import ZooError
from ..param_types import Number, describe

PSEUDO = {"eval", "select", "push"}  # steps that run in process (zoo/pipeline_steps.py), not operators


@dataclass
class StepInput:
    ref: str
    role: str | None = None
    weight: float | None = None


@dataclass
class Step:
    name: str
    op: str
    params: dict = field(default_factory=dict)
    inputs: list[StepInput] = field(default_factory=list)
    grid: dict[str, list] = field(default_factory=dict)
    out: str | None = None  # the output's catalog name (default `{pipeline}-{step}`); `zoo lineage --recipe` sets it
    for_each: str | None = None  # an input step: run once per model it made, each run given that one model

    @property
    def indexed(self) -> bool:
        """Whether the step can make several outputs, named `{pipeline}-{step}-{i}`."""
        return bool(self.grid or self.for_each)

    def points(self) -> list[dict]:
        """The params of each grid point (one point without a grid)."""
        import copy

        if not self.grid:
            return [dict(self.params)]
        points = []
        for values in itertools.product(*self.grid.values()):
            point = copy.deepcopy(self.params)
            for key, value in zip(self.grid, values):  # dotted keys reach nested params
                *path, leaf = key.split(".")
                node = point
                for part in path:
                    node = node.setdefault(part, {})
                node[leaf] = value
            points.append(point)
        return points


@dataclass
class Pipeline:
    name: str
    steps: dict[str, Step]

    @classmethod
    def load(cls, path: str | Path) -> "Pipeline":
        from ..yaml_input import load_file

        if not Path(path).exists():
            raise ZooError(f"{path}: no such pipeline file")
        doc = load_file(path, "pipeline file")  # size- and alias-limited: user input
        return cls.from_dict(doc, default_name=Path(path).stem)

    @classmethod
    def from_dict(cls, doc: Any, default_name: str = "pipeline") -> "Pipeline":
        if not isinstance(doc, dict) or not isinstance(doc.get("steps"), dict) or not doc["steps"]:
            raise ZooError("a pipeline needs a `steps:` mapping of step name -> {op, params, inputs}")
        steps = {}
        for name, spec in doc["steps"].items():
            if not isinstance(spec, dict) or "op" not in spec:
                raise ZooError(f"step {name!r}: give its operator as `op:`")
            unknown = set(spec) - {"op", "params", "inputs", "grid", "out", "for_each"}
            if unknown:
                raise ZooError(f"step {name!r}: unknown key {sorted(unknown)[0]!r} (op, params, inputs, grid, out, "
                               "for_each)")
            _check_shapes(name, spec)
            for_each = spec.get("for_each")
            if for_each is not None and (not isinstance(for_each, str) or for_each not in _refs(spec)):
                raise ZooError(f"step {name!r}: `for_each:` names one of the step's inputs (got {for_each!r})")
            out = spec.get("out")
            if out is not None and (not isinstance(out, str) or not out.strip()):
                raise ZooError(f"step {name!r}: `out:` is the output's catalog name, a non-empty string")
            inputs = []
            for item in spec.get("inputs") or []:
                if isinstance(item, str):
                    inputs.append(StepInput(item))
                elif isinstance(item, dict) and "ref" in item:
                    inputs.append(StepInput(str(item["ref"]), item.get("role"), _weight(name, item.get("weight"))))
                else:
                    raise ZooError(f"step {name!r}: an input is a ref or {{ref, role, weight}}")
            grid = spec.get("grid") or {}
            if not all(isinstance(v, list) and v for v in grid.values()):
                raise ZooError(f"step {name!r}: each grid entry is a non-empty list of values")
            steps[str(name)] = Step(str(name), str(spec["op"]), dict(spec.get("params") or {}), inputs, grid, out,
                                    for_each)
        return cls(str(doc.get("name") or default_name), steps)

    # --- checking ----------------------------------------------------------------------------
    def graph(self):
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(self.steps)
        for step in self.steps.values():
            for inp in step.inputs:
                if inp.ref in self.steps:
                    g.add_edge(inp.ref, step.name)
        return g

    def fanout(self, ref: str) -> int:
        """The most models a step's output (or a catalog ref) can hold, known before running."""
        step = self.steps.get(ref)
        if step is None:
            return 1
        if step.op == "select" and step.params.get("mode", "best") == "best":
            return 1
        if step.op in PSEUDO:
            return sum(self.fanout(i.ref) for i in step.inputs)
        return self.runs(step) // len(step.points()) * sum(_outputs_per_run(step.op, point) for point in step.points())

    def runs(self, step: Step) -> int:
        """How many times an operator step runs: once per grid point, times the models of
        its `for_each` input."""
        return len(step.points()) * (self.fanout(step.for_each) if step.for_each else 1)


@dataclass
class StepResult:
    name: str
    status: str  # ran, reused, failed, skipped, planned
    outputs: list[str] = field(default_factory=list)
    detail: str = ""
    report: dict | None = None


def output_name(pipeline: str, step: Step, index: int) -> str:
    return (step.out or f"{pipeline}-{step.name}") + (f"-{index}" if step.indexed else "")


def _outputs_per_run(op: str, point: dict) -> int:
    """How many models one run of `op` with these params makes (declared by the operator;
    params it refuses count as one: the check reports them)."""
    from ..registry import get_operator

    try:
        operator = get_operator(op)
        return operator.output_count(operator.validate(point))
    except ZooError:
        return 1


def _refs(spec: dict) -> list[str]:
    """The refs of a step's inputs as written (`ref` or {ref, role, weight})."""
    items = spec.get("inputs") or []
    return [str(i["ref"]) if isinstance(i, dict) and "ref" in i else str(i) for i in items if isinstance(i, (str, dict))]


def _weight(step: str, value: Any) -> float | None:
    """An input's lineage weight: absent, or a finite number (never a boolean)."""
    if value is None:
        return None
    try:
        return TypeAdapter(Number).validate_python(value)
    except ValidationError as e:
        raise ZooError(f"step {step!r}: {describe(e.errors()[0], 'weight', context=' (of an input)')}") from None


_SHAPES = {"op": (str, "an operator name"), "params": (dict, "a mapping of parameter -> value"),
           "inputs": (list, "a list of refs or {ref, role, weight}"),
           "grid": (dict, "a mapping of parameter -> list of values")}


def _check_shapes(name: Any, spec: dict) -> None:
    """Each key of a step holds the YAML type the code expects: one line, not a TypeError."""
    for key, (kind, words) in _SHAPES.items():
        value = spec.get(key)
        if value is not None and not isinstance(value, kind):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise ZooError(f"step {name!r}: `{key}:` must be {words}, not {shown}")
