"""Commands that make, train and evaluate small models: new, train, eval, and the demo zoo."""
from __future__ import annotations

from typing import List, Optional

import typer

from ..command_kit import catalog, fmt_metric, json_option, metrics_line, out_option, seed_option
from ..console import err, human_count, parse_assignments, print_json
from ..console import out as out_console
from .catalog import lineage, list_models

app = typer.Typer()


@app.command()
def demo(steps: int = typer.Option(60, "--steps", help="Training steps per model."),
         seed: int = seed_option()) -> None:
    """Build a small demo zoo: a tiny Llama pretrained on Python's own sources, two
    fine-tunes on different packages and their TIES merge, all registered with lineage;
    then list it and show the family tree.

    Example: zoo --catalog demo.db demo --steps 20"""
    from ..demo import build_demo_zoo

    cat = catalog()
    made = build_demo_zoo(cat, steps=steps, seed=seed, log=lambda msg: err.print(msg))
    list_models(family=None, tag="demo", name=None, limit=None, offset=0, as_json=False, columns=None)
    out_console.print()
    lineage(made[0].ref, fmt="tree", output=None, show_recipe=False)


def _preset_help() -> str:
    """The presets and families `zoo new` knows, as the families declare them."""
    from ..families import presets

    known = presets()
    families = sorted({p["family"] for p in known.values()})
    return f"A preset ({', '.join(known)}) or a family ({', '.join(families)})."


@app.command("new")
def new_cmd(
    preset: str = typer.Argument(..., help=_preset_help()),
    set_: List[str] = typer.Option([], "--set", help="Config field KEY=VALUE overriding the preset, e.g. hidden_size=64."),
    seed: int = seed_option("Initialisation seed."),
    out: Optional[str] = out_option("Catalog name [default: PRESET-sSEED]."),
) -> None:
    """Create a new, randomly initialised model (to train with `zoo train`).

    Example: zoo new vit-ti --set hidden_size=64 --seed 1 --out my-vit"""
    from ..training import new_model

    r = new_model(catalog(), preset, out, seed, **parse_assignments(set_, "--set"))
    e = r.entry
    verb = "reused" if r.reused else "created"
    out_console.print(f"{verb} [bold]{e.ref}[/bold]  {e.family}  {human_count(e.num_params)} params")


@app.command("train")
def train_cmd(
    ref: str = typer.Argument(..., help="The model to train (catalog reference)."),
    task: str = typer.Option(..., "--task", help="digits, digits:0-4, pytext, or a registered task."),
    steps: int = typer.Option(100, "--steps", help="Optimizer steps."),
    lr: float = typer.Option(1e-3, "--lr", help="Peak learning rate (AdamW)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Examples per step."),
    schedule: str = typer.Option("constant", "--schedule", help="constant, cosine, or lemon (faster decay for expanded models)."),
    warmup: int = typer.Option(0, "--warmup", help="Linear warm-up steps."),
    seed: int = seed_option("Data order seed."),
    out: Optional[str] = out_option("Catalog name of the trained model.", default="train-finetune-HASH"),
) -> None:
    """Train a model briefly on a task; the result is a new entry (lineage role `base`)
    with its training and evaluation metrics. Runs under accelerate.

    Example: zoo train my-vit --task digits --steps 200 --schedule cosine --out my-vit-digits"""
    from ..console import item_progress
    from ..training import train

    with item_progress("training") as advance:
        r = train(catalog(), ref, task, out, progress=advance, steps=steps, lr=lr, batch_size=batch_size,
                  schedule=schedule, warmup_steps=warmup, seed=seed)
    e = r.entry
    out_console.print(f"{'reused' if r.reused else 'trained'} [bold]{e.ref}[/bold]  {metrics_line(e.metrics)}")


@app.command("eval")
def eval_cmd(
    ref: str = typer.Argument(..., help="The model to evaluate."),
    task: str = typer.Option(..., "--task", help="digits, digits:0-4, pytext, or a registered task."),
    split: str = typer.Option("test", "--split", help="test, val or train (digits)."),
    as_json: bool = json_option("Print the metrics as JSON."),
) -> None:
    """Evaluate a model on a task and store the metrics on its catalog entry.

    Example: zoo eval my-vit-digits --task digits --split val"""
    from ..training import evaluate

    metrics = evaluate(catalog(), ref, task, split)
    if as_json:
        print_json(metrics)
    else:
        out_console.print(f"{catalog().get(ref).ref}: " + ", ".join(f"{k}={fmt_metric(v)}" for k, v in metrics.items()))
