"""Checking and running a pipeline: the DAG checks made before anything runs, and the runs
(cached and resumable, independent steps in parallel). The `--dry-run` plan is `plan.py`."""
from __future__ import annotations

from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

from ..catalog import Catalog, Parent
from ..errors import ZooError, did_you_mean
from ..launch import launched_processes
from ..registry import contract_problem, get_operator
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
            if step.for_each:
                raise ZooError(f"step {step.name!r}: {step.op} takes all its inputs at once; for_each is for "
                               "operator steps")
            check_pseudo_step(pipeline, step)
            continue
        op = get_operator(step.op)  # unknown operator: one line naming the known ones
        for point in step.points():
            try:
                op.validate(point)
            except ZooError as e:
                raise ZooError(f"step {step.name!r}: {e}") from None
        check_inputs(pipeline, step)
    return list(nx.topological_sort(g))


def check_inputs(pipeline: Pipeline, step: Step) -> None:
    """The models each run of an operator step gets, per role, against the operator's declared
    inputs. An input that can hold several models where the operator takes one is refused
    (never silently narrowed to its first model) unless the step says `for_each: INPUT`."""
    op = get_operator(step.op)
    if op.inputs is None:
        return
    counts: Counter[str] = Counter()
    many: dict[str, tuple[str, int]] = {}  # role -> an input giving several models to it
    for inp in step.inputs:
        n = 1 if inp.ref == step.for_each else pipeline.fanout(inp.ref)
        role = _role(step, inp)
        counts[role] += n
        if n > 1:
            many.setdefault(role, (inp.ref, n))
    problem = contract_problem(op.name, op.inputs, counts)
    if problem is None:
        return
    spec = next((s for s in op.inputs if s.role in many and not s.admits(counts[s.role])), None)
    if spec is not None:
        ref, n = many[spec.role]
        raise ZooError(f"step {step.name!r}: input {ref!r} gives {n} models, but {op.name} takes {spec.how_many()} "
                       f"with role {spec.role!r}; add `for_each: {ref}` to run the step once per model")
    raise ZooError(f"step {step.name!r}: {problem}")


def _role(step: Step, inp: StepInput) -> str:
    """The input's role as written, else the operator's declared default."""
    if inp.role:
        return inp.role
    if step.op in PSEUDO:
        return "input"
    return get_operator(step.op).default_role


def check_force(pipeline: Pipeline, force: set[str] | frozenset[str]) -> None:
    """`--force STEP` names a step of the pipeline."""
    unknown = set(force) - set(pipeline.steps)
    if unknown:
        name = sorted(unknown)[0]
        raise ZooError(f"--force {name!r}: no such step{did_you_mean(name, list(pipeline.steps))}; the steps are "
                       + ", ".join(pipeline.steps))


def run_pipeline(catalog: Catalog, pipeline: Pipeline, *, force: set[str] = frozenset(), jobs: int = 1,
                 report_dir: Path | None = None, log: Callable[[str], None] = lambda msg: None) -> dict[str, StepResult]:
    """Run every step in dependency order (independent ones in parallel with jobs > 1);
    `log` hears each step start ('NAME: OP ...') and end ('NAME: STATUS ...')."""
    order = check(catalog, pipeline)
    if launched_processes() > 1:
        jobs = 1  # launched processes meet at barriers per step: every rank must take the steps in one order
    check_force(pipeline, force)
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


def step_inputs(step: Step, results: dict[str, StepResult], one: str | None = None) -> list[Parent]:
    """The step's inputs in order, each input step standing for all its outputs, except the
    `for_each` input, which stands for the one model `one`."""
    parents = []
    for inp in step.inputs:
        if inp.ref == step.for_each and one is not None:
            refs = [one]
        else:
            refs = results[inp.ref].outputs if inp.ref in results else [inp.ref]
        parents += [Parent(r, _role(step, inp), inp.weight) for r in refs]
    return parents


def _run_step(catalog: Catalog, pipeline: Pipeline, step: Step, results: dict[str, StepResult], force: bool,
              report_dir: Path | None) -> StepResult:
    from ..runner import run_operator

    if step.op in PSEUDO:
        return run_pseudo_step(catalog, pipeline, step, step_inputs(step, results), force, report_dir)
    each = for_each_models(step, results)
    outs, reused, i = [], 0, 0
    for point in step.points():
        for one in each:
            r = run_operator(catalog, step.op, step_inputs(step, results, one), point,
                             output_name(pipeline.name, step, i), reuse=not force, tags=[f"pipeline={pipeline.name}"])
            outs += [e.ref for e in r.entries]  # every output of a multi-output operator
            reused += len(r.entries) if r.reused else 0
            i += 1
    status = "reused" if reused == len(outs) else "ran"
    return StepResult(step.name, status, outs, detail=f"{reused} of {len(outs)} reused" if step.indexed else "")


def for_each_models(step: Step, results: dict[str, StepResult]) -> list[str | None]:
    """The models of the step's `for_each` input, one run each ([None]: one run with all)."""
    if not step.for_each:
        return [None]
    return list(results[step.for_each].outputs) if step.for_each in results else [step.for_each]
