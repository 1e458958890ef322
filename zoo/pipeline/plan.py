"""`zoo build --dry-run`: what a build would do, step by step, and why, run nothing.

Each run of an operator step is decided the way the runner decides it: the step's inputs
are resolved as the build would resolve them (`run.step_inputs`), the cache key is the runner's
(`runner.cache_key`) and the lookup is the runner's (`runner.cached_entries`). A step whose
runs would all be reused gives its recorded outputs to the steps after it, so a chain of
reused steps is followed to the end. When a run would not be reused, the reason comes from
the run recorded under the step's output name: `new step` (none), `new params`, `changed
input` (an input's digest differs), `no cache` (`--force STEP` / `--no-cache`), or `input from
step X, which will run` (its output is not known before it runs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..catalog import Catalog, ModelEntry, Parent
from ..errors import NotFoundError
from .run import check, check_force, for_each_models, step_inputs
from .spec import PSEUDO, Pipeline, Step, StepResult, output_name


@dataclass
class RunPlan:
    """One run of a step: its output name, reuse or run, and the entries reused or why not."""

    output: str
    action: str  # "reuse" or "run"
    reason: str = ""
    reuse: list[str] = field(default_factory=list)

    def row(self) -> dict:
        return {"output": self.output, "action": self.action, "reason": self.reason, "reuse": self.reuse}


def plan(catalog: Catalog, pipeline: Pipeline, force: set[str] | frozenset[str] = frozenset(),
         no_cache: bool = False) -> list[dict]:
    """What `--dry-run` prints: each step in order with its operator, inputs, grid size (and a
    push step's repo template), and whether each run would be reused or run, and why."""
    order = check(catalog, pipeline)
    check_force(pipeline, force)
    known: dict[str, StepResult] = {}  # steps whose outputs are known before running
    out = []
    for name in order:
        step = pipeline.steps[name]
        runs = pipeline.runs(step) if step.op not in PSEUDO else 0
        row = {"step": name, "op": step.op, "inputs": [i.ref for i in step.inputs], "runs": runs,
               "outputs": [output_name(pipeline.name, step, i) for i in range(runs)]}
        if step.for_each:
            row["for_each"] = step.for_each
        if step.op == "push":
            row["repo"] = step.params["repo"]
        forced = "--no-cache" if no_cache else f"--force {name}" if name in force else None
        decided, outputs = _decide(catalog, pipeline, step, known, forced)
        if outputs is not None:
            known[name] = StepResult(name, "planned", outputs)
        row["action"] = "reuse" if all(d.action == "reuse" for d in decided) else "run"
        row["plan"] = [d.row() for d in decided]
        out.append(row)
    return out


def plan_lines(row: dict) -> list[str]:
    """A step of the plan as `zoo build --dry-run` prints it: a line for the step, then one
    per run: `reuse REF` or `run (why)`."""
    runs = (f"{row['runs']} run(s) -> {', '.join(row['outputs'])}" if row["runs"]
            else f"(push to {row['repo']})" if row.get("repo") else "(in process)")
    head = f"{row['step']}: {row['op']} <- {', '.join(row['inputs']) or '-'}  {runs}"
    several = len(row["plan"]) > 1
    return [head, *(f"  {p['output'] + ': ' if several else ''}"
                    + (f"reuse {_refs(p['reuse'])}" if p["action"] == "reuse" else f"run ({p['reason']})")
                    for p in row["plan"])]


def _refs(refs: list[str]) -> str:
    """Refs for a line: all of them, or (more than 3) the first two and how many (`--json` has all)."""
    return ", ".join(refs) if len(refs) <= 3 else f"{refs[0]}, {refs[1]}, ... ({len(refs)} entries)"


def _decide(catalog: Catalog, pipeline: Pipeline, step: Step, known: dict[str, StepResult],
            forced: str | None) -> tuple[list[RunPlan], list[str] | None]:
    """The step's runs, decided, and its outputs when they are known before it runs."""
    pending = next((i.ref for i in step.inputs if i.ref in pipeline.steps and i.ref not in known), None)
    if step.op in PSEUDO:
        return _decide_in_process(catalog, pipeline, step, known, forced, pending)
    if forced or pending:
        reason = f"no cache: {forced}" if forced else f"input from step {pending!r}, which will run"
        return [RunPlan(output_name(pipeline.name, step, i), "run", reason) for i in range(pipeline.runs(step))], None
    from ..registry import get_operator
    from ..runner import cache_key, cached_entries

    op = get_operator(step.op)
    decided, outputs, i = [], [], 0
    for point in step.points():
        params = op.validate(point)
        for one in for_each_models(step, known):
            out_name = output_name(pipeline.name, step, i)
            resolved = [(p, catalog.get(p.ref)) for p in step_inputs(step, known, one)]
            hit = cached_entries(catalog, cache_key(op, params, resolved), out_name)
            if hit is not None:
                decided.append(RunPlan(out_name, "reuse", reuse=[e.ref for e in hit]))
                outputs += [e.ref for e in hit]
            else:
                decided.append(RunPlan(out_name, "run", why_not_cached(catalog, op, params, resolved, out_name)))
            i += 1
    return decided, outputs if all(d.action == "reuse" for d in decided) else None


def why_not_cached(catalog: Catalog, op, params, resolved: list[tuple[Parent, ModelEntry]], out_name: str) -> str:
    """Why a run has no cache hit, against the run recorded under its output name."""
    try:
        last = catalog.get(out_name)
    except NotFoundError:
        return "new step"
    run = catalog.producing_run(last)
    if run is None:
        return f"new step ({last.ref} was not made by a run)"
    if run.operator != op.name:
        return f"new operator ({last.ref} was made by {run.operator})"
    if run.operator_version != op.version:
        return f"new operator version ({run.operator_version} -> {op.version})"
    changed = _changed(run.params or {}, params.model_dump(mode="json"))
    if changed:
        return "new params: " + ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
    recorded = run.inputs or []
    for k, (p, e) in enumerate(resolved):
        was = recorded[k] if k < len(recorded) else None
        if was is None or was.get("digest") != e.digest:
            return f"changed input: {e.ref}" + (f" (the recorded run read {was.get('ref')})" if was else "")
        if was.get("role") != p.role or was.get("weight") != p.weight:
            return f"changed input role or weight: {e.ref}"
    if len(recorded) != len(resolved):
        return f"changed inputs ({len(recorded)} recorded, {len(resolved)} now)"
    return f"the recorded run's outputs are gone or named otherwise ({last.ref})"


def _changed(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key old -> new' for every differing leaf, dotted keys for nested params."""
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _changed(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}")
    return found


def _decide_in_process(catalog: Catalog, pipeline: Pipeline, step: Step, known: dict[str, StepResult],
                       forced: str | None, pending: str | None) -> tuple[list[RunPlan], list[str] | None]:
    """eval: reused when every input already holds the task's headline metric; select: runs
    (in process, cheap), its choice known when its inputs' metrics are; push: reused when
    every input's card records a push of its bytes to its repo and branch."""
    from .steps import eval_headline, push_targets, selection_known

    name = step.name
    if pending:
        return [RunPlan(name, "run", f"input from step {pending!r}, which will run")], None
    parents = step_inputs(step, known)
    if step.op == "select":
        return [RunPlan(name, "run", "in process: keeps the best of its inputs")], selection_known(catalog, step, parents)
    if step.op == "eval":  # passes its inputs on, as `steps._eval` does
        passed = [p.ref for p in parents]
        entries = list({e.id: e for e in (catalog.get(r) for r in passed)}.values())
        headline = eval_headline(step)
        todo = [e.ref for e in entries if forced or headline not in (e.metrics or {})]
        if not todo:
            return [RunPlan(name, "reuse", reuse=[e.ref for e in entries])], passed
        why = f"no cache: {forced}" if forced else f"{len(todo)} of {len(entries)} not scored on {headline} yet"
        return [RunPlan(name, "run", why)], passed
    _, targets = push_targets(catalog, pipeline, step, parents)
    pushed = [e.ref for e, _, _ in targets]
    todo = [f"{e.ref} -> {repo}" for e, repo, rec in targets if forced or rec is None]
    if not todo:
        return [RunPlan(name, "reuse", reuse=[f"{e.ref} -> {repo}" for e, repo, _ in targets])], pushed
    why = f"no cache: {forced}" if forced else f"not pushed yet: {', '.join(todo)}"
    return [RunPlan(name, "run", why)], pushed
