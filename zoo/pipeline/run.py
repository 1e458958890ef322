"""Checking and running a pipeline: the DAG checks made before anything runs, the runs
(cached and resumable, independent steps in parallel), and the `--dry-run` plan."""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from ..catalog import Catalog, Parent
from ..errors import ZooError
from ..launch import launched_processes
from ..registry import get_operator
from .spec import PSEUDO, Pipeline, Step, StepInput, StepResult, output_name
from .steps import check_pseudo_step, run_pseudo_step


def check(catalog: Catalog, pipeline: Pipeline) -> list[str]:
    """Every problem found before anything runs; returns the run order."""
    import networkx as nx

    g = pipeline.graph()
    try:
        cycle = nx.find_cycle(g)
        raise ZooError("the steps form a cycle: " + " -> ".join([a for a, _ in cycle] + [cycle[0][0]]))
    except nx.NetworkXNoCycle:
        pass
    for step in pipeline.steps.values():
        for inp in step.inputs:
            if inp.ref not in pipeline.steps:
                try:
                    catalog.get(inp.ref)
                except ZooError:
                    raise ZooError(f"step {step.name!r}: input {inp.ref!r} is neither a step nor a catalog "
                                   "model") from None
        if step.op in PSEUDO:
            check_pseudo_step(pipeline, step)
            continue
        op = get_operator(step.op)  # unknown operator: one line naming the known ones
        for point in step.points():
            try:
                op.validate(point)
            except ZooError as e:
                raise ZooError(f"step {step.name!r}: {e}") from None
    return list(nx.topological_sort(g))


def _role(step: Step, inp: StepInput) -> str:
    """The input's role as written, else the operator's declared default."""
    if inp.role:
        return inp.role
    if step.op in PSEUDO:
        return "input"
    return get_operator(step.op).default_role


def run_pipeline(catalog: Catalog, pipeline: Pipeline, *, force: set[str] = frozenset(), jobs: int = 1,
                 report_dir: Path | None = None, log: Callable[[str], None] = lambda msg: None) -> dict[str, StepResult]:
    """Run every step in dependency order (independent ones in parallel with jobs > 1);
    `log` hears each step start ('NAME: OP ...') and end ('NAME: STATUS ...')."""
    order = check(catalog, pipeline)
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
    from ..runner import run_operator

    parents = _inputs(step, results)
    if step.op in PSEUDO:
        return run_pseudo_step(catalog, pipeline, step, parents, force, report_dir)
    outs, reused = [], 0
    for i, point in enumerate(step.points()):
        r = run_operator(catalog, step.op, parents, point, output_name(pipeline.name, step, i), reuse=not force,
                         tags=[f"pipeline={pipeline.name}"])
        outs += [e.ref for e in r.entries]  # every output of a multi-output operator
        reused += r.reused
    status = "reused" if reused == len(outs) else "ran"
    return StepResult(step.name, status, outs, detail=f"{reused} of {len(outs)} reused" if step.grid else "")


def plan(catalog: Catalog, pipeline: Pipeline) -> list[dict]:
    """What `--dry-run` prints: each step in order with its operator, inputs and grid size
    (and a push step's repo template)."""
    order = check(catalog, pipeline)
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
