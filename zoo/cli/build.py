"""`zoo build PIPELINE.yaml`: run a variant-building pipeline (see zoo/pipeline/)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..command_kit import catalog, json_option, no_cache_option
from ..console import err, item_progress, out, print_json

app = typer.Typer()


@app.command()
def build(
    pipeline_file: Path = typer.Argument(..., help="The pipeline YAML (steps: name -> {op, params, inputs, grid})."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check everything and print the plan: for each run, `reuse "
                                 "REF` or `run (why)`; run nothing."),
    force: List[str] = typer.Option([], "--force", help="Run this step again even if cached (repeatable)."),
    no_cache: bool = no_cache_option("Run every step again, even those with a recorded run."),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Independent steps run in parallel."),
    report_dir: Optional[Path] = typer.Option(Path("pipeline-reports"), "--reports", help="Where select steps write their reports."),
    as_json: bool = json_option("Print the results as JSON."),
) -> None:
    """Build every step of a pipeline in dependency order. Cycles, unknown operators,
    unknown params and missing inputs are reported before anything runs; steps whose
    operator, params and input digests match a recorded run reuse it, so an interrupted
    build resumes; a failed step stops only the steps that depend on it. Besides
    operators, `eval` scores models on a task, `select` keeps the best or the Pareto
    front (against params or FLOPs) and writes a report, and `push` uploads the winners
    to the Hugging Face Hub (skipping bytes already pushed to that repo and branch).

    `--dry-run` says, for each run, whether it would be reused (and which entry) or run, and
    why: new step, new params, changed input, no cache, or an input made by an earlier step
    that will run.

    Example: zoo build examples/digits_variants.yaml --dry-run, then without --dry-run."""
    from ..errors import ZooError
    from ..pipeline import Pipeline, plan, run_pipeline
    from ..pipeline.plan import plan_lines

    cat = catalog()
    pipe = Pipeline.load(pipeline_file)
    if no_cache:
        force = list(pipe.steps)
    if dry_run:
        steps = plan(cat, pipe, force=set(force), no_cache=no_cache)
        if as_json:
            print_json(steps)
        else:
            for s in steps:
                for line in plan_lines(s):
                    out.print(line, markup=False, highlight=False)
        return
    with item_progress("building", total=len(pipe.steps)) as advance:
        def log(message: str) -> None:
            err.print(message, highlight=False)
            if not message.endswith(" ..."):  # a step finished
                advance(1)

        results = run_pipeline(cat, pipe, force=set(force), jobs=jobs, report_dir=report_dir, log=log)
    rows = [{"step": r.name, "status": r.status, "outputs": r.outputs, "detail": r.detail} for r in results.values()]
    if as_json:
        print_json(rows)
    else:
        for r in rows:
            out.print(f"{r['step']:<16} {r['status']:<8} {', '.join(r['outputs'])}  {r['detail']}")
    failed = [r for r in rows if r["status"] in ("failed", "skipped")]
    if failed:
        raise ZooError(f"{len(failed)} step(s) did not finish: " + ", ".join(f"{r['step']} ({r['detail']})" for r in failed))
