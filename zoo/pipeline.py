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
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .catalog import Catalog, Parent
from .errors import ZooError
from .launch import launched_processes

PSEUDO = {"eval", "select", "push"}  # steps that run in process (zoo/pipeline_steps.py), not operators
DEFAULT_ROLE = {"train": "base", "expand": "source", "stitch": "anchor", "learngene": "teacher",
                "generate.sample": "generator", "generate.pdiff": "base", "generate.d2nwg": "zoo"}


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

    def check(self, catalog: Catalog) -> list[str]:
        """Every problem found before anything runs; returns the run order."""
        import networkx as nx

        from .pipeline_steps import check_pseudo_step
        from .registry import get_operator

        g = self.graph()
        try:
            cycle = nx.find_cycle(g)
            raise ZooError("the steps form a cycle: " + " -> ".join([a for a, _ in cycle] + [cycle[0][0]]))
        except nx.NetworkXNoCycle:
            pass
        for step in self.steps.values():
            for inp in step.inputs:
                if inp.ref not in self.steps:
                    try:
                        catalog.get(inp.ref)
                    except ZooError:
                        raise ZooError(f"step {step.name!r}: input {inp.ref!r} is neither a step nor a catalog "
                                       "model") from None
            if step.op in PSEUDO:
                check_pseudo_step(self, step)
                continue
            op = get_operator(step.op)  # unknown operator: one line naming the known ones
            for point in step.points():
                try:
                    op.validate(point)
                except ZooError as e:
                    raise ZooError(f"step {step.name!r}: {e}") from None
        return list(nx.topological_sort(g))


@dataclass
class StepResult:
    name: str
    status: str  # ran, reused, failed, skipped, planned
    outputs: list[str] = field(default_factory=list)
    detail: str = ""
    report: dict | None = None


def output_name(pipeline: str, step: Step, index: int) -> str:
    return f"{pipeline}-{step.name}" + (f"-{index}" if step.grid else "")


def _role(step: Step, inp: StepInput) -> str:
    if inp.role:
        return inp.role
    for prefix in (step.op.rsplit(".", 1)[0], step.op.split(".", 1)[0]):
        if prefix in DEFAULT_ROLE:
            return DEFAULT_ROLE[prefix]
    return DEFAULT_ROLE.get(step.op, "input")


def run_pipeline(catalog: Catalog, pipeline: Pipeline, *, force: set[str] = frozenset(), jobs: int = 1,
                 report_dir: Path | None = None, log: Callable[[str], None] = lambda msg: None) -> dict[str, StepResult]:
    """Run every step in dependency order (independent ones in parallel with jobs > 1);
    `log` hears each step start ('NAME: OP ...') and end ('NAME: STATUS ...')."""
    order = pipeline.check(catalog)
    if launched_processes() > 1:
        jobs = 1  # launched processes meet at barriers per step: every rank must take the steps in one order
    unknown = set(force) - set(pipeline.steps)
    if unknown:
        raise ZooError(f"--force {sorted(unknown)[0]!r}: no such step")
    g = pipeline.graph()
    results: dict[str, StepResult] = {}
    pending = list(order)

    def ready(name: str) -> bool:
        return all(p in results for p in g.predecessors(name))

    def launch(name: str) -> StepResult:
        step = pipeline.steps[name]
        bad = [p for p in g.predecessors(name) if results[p].status in ("failed", "skipped")]
        if bad:
            return StepResult(name, "skipped", detail=f"{bad[0]} did not finish")
        log(f"{name}: {step.op} ...")
        try:
            return _run_step(catalog, pipeline, step, results, name in force, report_dir)
        except Exception as e:  # noqa: BLE001 - a failed step stops its descendants, not the build
            return StepResult(name, "failed", detail=str(e).splitlines()[0] if str(e) else type(e).__name__)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        running: dict = {}
        while pending or running:
            for name in [n for n in pending if ready(n)][: max(1, jobs) - len(running)]:
                pending.remove(name)
                running[pool.submit(launch, name)] = name
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                res = fut.result()
                results[running.pop(fut)] = res
                log(f"{res.name}: {res.status}" + (f" ({res.detail})" if res.detail else "")
                    + (f" -> {', '.join(res.outputs)}" if res.outputs else ""))
    return {n: results[n] for n in order}


def _inputs(step: Step, results: dict[str, StepResult]) -> list[Parent]:
    parents = []
    for inp in step.inputs:
        refs = results[inp.ref].outputs if inp.ref in results else [inp.ref]
        parents += [Parent(r, _role(step, inp), inp.weight) for r in refs]
    return parents


def _run_step(catalog: Catalog, pipeline: Pipeline, step: Step, results: dict[str, StepResult], force: bool,
              report_dir: Path | None) -> StepResult:
    from .pipeline_steps import run_pseudo_step
    from .runner import run_operator

    parents = _inputs(step, results)
    if step.op in PSEUDO:
        return run_pseudo_step(catalog, pipeline, step, parents, force, report_dir)
    outs, reused = [], 0
    for i, point in enumerate(step.points()):
        r = run_operator(catalog, step.op, parents, point, output_name(pipeline.name, step, i), reuse=not force,
                         tags=[f"pipeline={pipeline.name}"])
        outs.append(r.entry.ref)
        reused += r.reused
    status = "reused" if reused == len(outs) else "ran"
    return StepResult(step.name, status, outs, detail=f"{reused} of {len(outs)} reused" if step.grid else "")


def plan(catalog: Catalog, pipeline: Pipeline) -> list[dict]:
    """What `--dry-run` prints: each step in order with its operator, inputs and grid size
    (and a push step's repo template)."""
    order = pipeline.check(catalog)
    out = []
    for name in order:
        step = pipeline.steps[name]
        out.append({"step": name, "op": step.op, "inputs": [i.ref for i in step.inputs],
                    "runs": len(step.points()) if step.op not in PSEUDO else 0,
                    "outputs": [output_name(pipeline.name, step, i) for i in range(len(step.points()))]
                    if step.op not in PSEUDO else []})
        if step.op == "push":
            out[-1]["repo"] = step.params["repo"]
    return out
