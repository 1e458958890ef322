"""The steps a pipeline runs in process rather than as operators: `eval` (score models on
a task), `select` (keep the best, or the Pareto front of a metric against params or FLOPs,
with a report) and `push` (send the winners to the Hub). Each one's params are checked
with the rest of the pipeline, before anything runs."""
from __future__ import annotations

import string
from pathlib import Path

from ..catalog import Catalog, ModelEntry, Parent
from ..errors import ZooError
from ..launch import launched_processes, on_main_process
from .spec import Pipeline, Step, StepResult


PARAMS = {  # step -> (required, optional) params
    "eval": ({"task"}, {"split"}),
    "select": ({"metric"}, {"mode", "cost", "higher_is_better"}),
    "push": ({"repo"}, {"private", "revision", "message"}),
}
MODES, COSTS = ("best", "pareto"), ("params", "flops")
REPO_FIELDS = {"name", "pipeline", "step"}  # what a push step's `repo` template may use
EXAMPLES = {"task": "digits", "metric": "digits/val_accuracy", "repo": "my-org/{name}"}


def check_pseudo_step(pipeline: Pipeline, step: Step) -> None:
    """One line for the first problem with an eval/select/push step's params."""
    where = f"step {step.name!r}"
    required, optional = PARAMS[step.op]
    unknown = set(step.params) - required - optional
    if unknown:
        raise ZooError(f"{where}: unknown {step.op} parameter {min(unknown)!r} "
                       f"(known: {', '.join(sorted(required | optional))})")
    for key in sorted(required):
        if not step.params.get(key):
            raise ZooError(f"{where}: {step.op} needs params.{key} (e.g. {EXAMPLES[key]})")
    if step.grid:
        raise ZooError(f"{where}: {step.op} takes no grid")
    if not step.inputs:
        raise ZooError(f"{where}: {step.op} needs inputs")
    if step.op == "select":
        if step.params.get("mode", "best") not in MODES:
            raise ZooError(f"{where}: select mode is best or pareto, not {step.params['mode']!r}")
        if step.params.get("cost", "params") not in COSTS:
            raise ZooError(f"{where}: select cost is params or flops, not {step.params['cost']!r}")
    if step.op == "push":
        _check_repo(pipeline, step, where)


def _check_repo(pipeline: Pipeline, step: Step, where: str) -> None:
    repo = step.params["repo"]
    if not isinstance(repo, str):
        raise ZooError(f"{where}: push needs params.repo as text (e.g. my-org/{{name}})")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(repo) if f is not None}
    except ValueError as e:
        raise ZooError(f"{where}: repo template {repo!r}: {e}") from None
    if fields - REPO_FIELDS:
        raise ZooError(f"{where}: repo template field {{{min(fields - REPO_FIELDS)}}} is unknown "
                       "(known: {name}, {pipeline}, {step})")
    n = sum(pipeline.fanout(i.ref) for i in step.inputs)
    if n > 1 and "name" not in fields:
        raise ZooError(f"{where}: it can push {n} models, so repo must contain {{name}} (got {repo!r})")


def run_pseudo_step(catalog: Catalog, pipeline: Pipeline, step: Step, parents: list[Parent], force: bool,
                    report_dir: Path | None) -> StepResult:
    if step.op == "eval":
        return _eval(catalog, step, parents, force)
    if step.op == "select":
        return _select(catalog, pipeline, step, parents, report_dir)
    if launched_processes() > 1:  # under a launcher: one rank pushes, the others then find it recorded
        done = on_main_process(lambda: _push(catalog, pipeline, step, parents, force))
        return done if done is not None else _push(catalog, pipeline, step, parents, False)
    return _push(catalog, pipeline, step, parents, force)


def _eval(catalog: Catalog, step: Step, parents: list[Parent], force: bool) -> StepResult:
    """Score each input on the task. An entry never changes, so one that already holds the
    task's headline metric on this split is not scored again (unless forced)."""
    from ..training import evaluate

    task_spec, split = step.params["task"], step.params.get("split", "test")
    headline = eval_headline(step)
    scores, reused = {}, 0
    for p in parents:
        entry = catalog.get(p.ref)
        if not force and headline in (entry.metrics or {}):
            scores[p.ref] = {headline: entry.metrics[headline]}
            reused += 1
        else:
            scores[p.ref] = evaluate(catalog, p.ref, task_spec, split)
    status = "reused" if reused == len(parents) else "ran"
    return StepResult(step.name, status, [p.ref for p in parents], report=scores,
                      detail=f"{reused} of {len(parents)} already scored" if 0 < reused < len(parents) else "")


def eval_headline(step: Step) -> str:
    """The metric an eval step records as its task's headline (e.g. digits/accuracy): an entry
    that holds it is not scored again."""
    from ..tasks import get_task
    from ..training import split_metrics

    task = get_task(step.params["task"])
    (headline,) = split_metrics(task, step.params.get("split", "test"), {task.primary: 0.0})
    return headline


def _flops(catalog: Catalog, entry: ModelEntry) -> int:
    """Forward FLOPs of one example, computed once and kept as the entry's `flops` metric."""
    if "flops" not in (entry.metrics or {}):
        from ..cost import forward_flops

        catalog.set_metrics(entry.id, {"flops": forward_flops(catalog.open(entry))})
        entry = catalog.get(entry.id)
    return int(entry.metrics["flops"])


def _select(catalog: Catalog, pipeline: Pipeline, step: Step, parents: list[Parent],
            report_dir: Path | None) -> StepResult:
    """Keep the best model by a metric, or the Pareto front of the metric against a cost
    (params or FLOPs); write a report (Markdown table, PNG, JSON) into `report_dir`."""
    from .report import write_report

    metric, cost = step.params["metric"], step.params.get("cost", "params")
    rows = []
    for p in parents:
        e = catalog.get(p.ref)
        if metric not in (e.metrics or {}):
            raise ZooError(f"step {step.name!r}: {e.ref} has no metric {metric!r} (add an eval step before)")
        row = {"ref": e.ref, "metric": e.metrics[metric], "params": e.num_params or 0}
        if cost == "flops":
            row["flops"] = _flops(catalog, e)
        rows.append(row)
    kept = select_kept(step, rows)
    for r in rows:
        r["kept"] = r["ref"] in kept
    if report_dir is not None:
        write_report(Path(report_dir) / f"{pipeline.name}-{step.name}", metric, rows, cost, prefix=f"{pipeline.name}-")
    return StepResult(step.name, "ran", kept, report={"rows": rows, "kept": kept})


def select_kept(step: Step, rows: list[dict]) -> list[str]:
    """The refs a select step keeps of `rows` ({ref, metric, params[, flops]}): the best, or
    the Pareto front of the metric against the cost."""
    mode, cost = step.params.get("mode", "best"), step.params.get("cost", "params")
    sign = 1 if step.params.get("higher_is_better", True) else -1
    if mode == "best":
        return [max(rows, key=lambda r: sign * r["metric"])["ref"]]
    kept, best = [], float("-inf")
    for r in sorted(rows, key=lambda r: (r[cost], -sign * r["metric"])):
        if sign * r["metric"] > best:
            kept.append(r["ref"])
            best = sign * r["metric"]
    return kept


def selection_known(catalog: Catalog, step: Step, parents: list[Parent]) -> list[str] | None:
    """What a select step would keep, when every input already holds the metric (and its
    FLOPs, when they are the cost); None when that is known only once it runs. Reads only."""
    metric, cost = step.params["metric"], step.params.get("cost", "params")
    rows = []
    for p in parents:
        e = catalog.get(p.ref)
        metrics = e.metrics or {}
        if metric not in metrics or (cost == "flops" and "flops" not in metrics):
            return None
        rows.append({"ref": e.ref, "metric": metrics[metric], "params": e.num_params or 0,
                     **({"flops": int(metrics["flops"])} if cost == "flops" else {})})
    return select_kept(step, rows) if rows else None


def push_targets(catalog: Catalog, pipeline: Pipeline, step: Step,
                 parents: list[Parent]) -> tuple[str, list[tuple[ModelEntry, str, dict | None]]]:
    """A push step's branch, and each distinct input entry with the repo its template names
    and the push of these bytes to that repo and branch its card already records (or None)."""
    params = step.params
    revision = params.get("revision") or "main"
    entries = list({e.id: e for e in (catalog.get(p.ref) for p in parents)}.values())
    targets = []
    for e in entries:
        repo_id = params["repo"].format(name=e.name, pipeline=pipeline.name, step=step.name)
        targets.append((e, repo_id, _recorded_push(e, repo_id, revision)))
    return revision, targets


def _recorded_push(entry: ModelEntry, repo_id: str, revision: str) -> dict | None:
    """The latest push of these bytes to this repo and branch that the entry's card records."""
    for rec in reversed((entry.card or {}).get("hub_pushes") or []):
        if (rec.get("repo_id") == repo_id and rec.get("revision", "main") == revision
                and rec.get("digest", entry.digest) == entry.digest):  # no digest: `zoo push` of this entry
            return rec
    return None


def _push(catalog: Catalog, pipeline: Pipeline, step: Step, parents: list[Parent], force: bool) -> StepResult:
    """Push each input to the Hub repo its template names. An input whose card already records
    a push of the same digest to that repo and branch is reused, so a rebuild makes no new
    commits; `--force STEP` pushes again."""
    from ..hub import push

    params = step.params
    revision, targets = push_targets(catalog, pipeline, step, parents)
    repos = [r for _, r, _ in targets]
    if len(set(repos)) < len(repos):
        raise ZooError(f"step {step.name!r}: several inputs would go to the same repo ({repos}); "
                       "use {name} with distinct model names")
    report, pushed = [], 0
    for entry, repo_id, recorded in targets:
        rec = None if force else recorded
        fresh = rec is None
        if fresh:
            push(catalog, entry.id, repo_id, private=bool(params.get("private", False)),
                 revision=params.get("revision"), message=params.get("message"))
            rec = catalog.get(entry.id).card["hub_pushes"][-1]
            pushed += 1
        report.append({"ref": entry.ref, "repo_id": repo_id, "commit": rec["commit"], "url": rec.get("url", ""),
                       "status": "pushed" if fresh else "reused"})
    detail = ", ".join(f"{r['repo_id']}@{r['commit'][:12]}" for r in report)  # where the winners went
    return StepResult(step.name, "ran" if pushed else "reused", [e.ref for e, _, _ in targets], detail=detail,
                      report={"pushes": report})
