"""`zoo population`: train hundreds of small digits MLPs at once and register each one, the
training data of weight generators (a thin front end of generators.zoo_builder)."""
from __future__ import annotations

from typing import List

import typer

from zoo.command_kit import catalog
from zoo.console import item_progress, out

app = typer.Typer()


@app.command("population")
def population(
    task: List[str] = typer.Option([], "--task", help="A digits task (repeat): digits, digits:0-4, digits:1,3,7, digits:perm3 [default: none besides --subsets and --perms]."),
    subsets: int = typer.Option(0, "--subsets", help="Also N random class subsets of 3 to 7 digits as tasks (e.g. digits:1,4,7)."),
    perms: int = typer.Option(0, "--perms", help="Also N label permutations as tasks: digits:perm0 .. digits:perm{N-1}."),
    task_seed: int = typer.Option(0, "--task-seed", help="Seed that draws the --subsets."),
    seeds: str = typer.Option("0", "--seeds", help="Data-order seeds: one model per task and seed (0,1,2 or 0-4)."),
    steps: int = typer.Option(300, "--steps", help="Training steps (every model trains at once)."),
    lr: float = typer.Option(1e-2, "--lr", help="Learning rate (Adam)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Examples per step and model."),
    hidden: str = typer.Option("32", "--hidden", help="Hidden layer sizes of the MLP, e.g. 32 or 64,32."),
    init_seed: int = typer.Option(0, "--init-seed", help="Seed of the initial weights, shared by every model."),
    prefix: str = typer.Option("pop", "--prefix", help="Name prefix and tag of the population."),
) -> None:
    """Build a population of small MLPs (one per task and seed) for weight-generation research.

    Every model starts from the same weights and differs by its task (class subset or label
    permutation of digits) and data order; all train at once (vmap), then each is evaluated
    on its task's test split and registered as `PREFIX-TASK-sSEED`, tagged PREFIX and task=TASK.

    Example: zoo population --subsets 50 --perms 50 --seeds 0,1,2 --prefix pop
    """
    from .frontend import population_command

    result = population_command(
        catalog(), tasks=task, subsets=subsets, perms=perms, task_seed=task_seed, seeds=seeds, steps=steps, lr=lr,
        batch_size=batch_size, hidden=hidden, init_seed=init_seed, prefix=prefix, progress_factory=item_progress)
    acc = result.accuracies
    t = result.timings
    out.print(f"built {len(result.entries)} models ({len(result.tasks)} tasks x {len(result.seeds)} seeds, "
              f"{steps} steps) in {result.seconds:.1f} s (train {t['train']:.1f} s, register {t['register']:.1f} s)")
    out.print(f"test accuracy: mean {sum(acc) / len(acc):.3f}, min {min(acc):.3f}, max {max(acc):.3f}")
    out.print(f"tag: [bold]{prefix}[/bold]   (zoo ls --tag {prefix}; in Python: generators.zoo_builder.population(catalog, {prefix!r}))")
