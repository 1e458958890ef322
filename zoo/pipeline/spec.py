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
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ZooError

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
        import yaml

        try:
            doc = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ZooError(f"{path}: no such pipeline file") from None
        except yaml.YAMLError as e:
            raise ZooError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        return cls.from_dict(doc, default_name=Path(path).stem)

    @classmethod
    def from_dict(cls, doc: Any, default_name: str = "pipeline") -> "Pipeline":
        if not isinstance(doc, dict) or not isinstance(doc.get("steps"), dict) or not doc["steps"]:
            raise ZooError("a pipeline needs a `steps:` mapping of step name -> {op, params, inputs}")
        steps = {}
        for name, spec in doc["steps"].items():
            if not isinstance(spec, dict) or "op" not in spec:
                raise ZooError(f"step {name!r}: give its operator as `op:`")
            unknown = set(spec) - {"op", "params", "inputs", "grid"}
            if unknown:
                raise ZooError(f"step {name!r}: unknown key {sorted(unknown)[0]!r} (op, params, inputs, grid)")
            inputs = []
            for item in spec.get("inputs") or []:
                if isinstance(item, str):
                    inputs.append(StepInput(item))
                elif isinstance(item, dict) and "ref" in item:
                    inputs.append(StepInput(str(item["ref"]), item.get("role"), item.get("weight")))
                else:
                    raise ZooError(f"step {name!r}: an input is a ref or {{ref, role, weight}}")
            grid = spec.get("grid") or {}
            if not all(isinstance(v, list) and v for v in grid.values()):
                raise ZooError(f"step {name!r}: each grid entry is a non-empty list of values")
            steps[str(name)] = Step(str(name), str(spec["op"]), dict(spec.get("params") or {}), inputs, grid)
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
        return len(step.points())


@dataclass
class StepResult:
    name: str
    status: str  # ran, reused, failed, skipped, planned
    outputs: list[str] = field(default_factory=list)
    detail: str = ""
    report: dict | None = None


def output_name(pipeline: str, step: Step, index: int) -> str:
    return f"{pipeline}-{step.name}" + (f"-{index}" if step.grid else "")
