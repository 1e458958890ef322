"""`zoo generate ...`: thin front ends of the weight generators (D2NWG, p-diff)."""
from __future__ import annotations

from typing import Optional

import typer

from zoo.command_kit import catalog, json_option, metrics_line, out_option, seed_option
from zoo.console import item_progress, out, print_json

app = typer.Typer(help="Generate weights: learn a zoo's weight distribution and sample new models.\n\n"
                       "Example: zoo generate d2nwg train --zoo pop --out gen",
                           no_args_is_help=True)
d2nwg_app = typer.Typer(help="D2NWG: dataset-conditioned latent diffusion over a zoo.\n\n"
                             "Example: zoo generate d2nwg sample gen --task digits:1,3,7 --n 10", no_args_is_help=True)
pdiff_app = typer.Typer(help="p-diff: latent diffusion over a parameter subset of one training run.\n\n"
                             "Example: zoo generate p-diff train my-mlp --task digits --out pdiff",
                        no_args_is_help=True)
app.add_typer(d2nwg_app, name="d2nwg")
app.add_typer(pdiff_app, name="p-diff")


def _frontend():
    """The generators' front-end helpers, imported when a command runs (not for --help)."""
    from . import frontend

    return frontend


def _trained(result) -> None:
    e = result.entry
    out.print(f"{'reused' if result.reused else 'trained'} generator [bold]{e.ref}[/bold]  {metrics_line(e.metrics)}")


@d2nwg_app.command("train")
def d2nwg_train(
    zoo: str = typer.Option(..., "--zoo", help="Tag of the zoo to learn from (e.g. the --prefix of `zoo population`)."),
    out_name: Optional[str] = out_option("Catalog name of the generator.", default="generate-d2nwg-train-HASH"),
    vae_steps: Optional[int] = typer.Option(None, "--vae-steps", help="Stage 1 (VAE) steps [default: 3000]."),
    diffusion_steps: Optional[int] = typer.Option(None, "--diffusion-steps", help="Stage 2 (latent diffusion) steps [default: 6000]."),
    latent: Optional[int] = typer.Option(None, "--latent", help="Latent size per 256-weight chunk [default: 16]."),
    seed: int = seed_option("Seed."),
) -> None:
    """Learn the weights of every model in a zoo, conditioned on each model's dataset.

    Example: zoo generate d2nwg train --zoo pop --vae-steps 500 --diffusion-steps 1000 --out gen"""
    with item_progress("training generator") as advance:
        result = _frontend().d2nwg_train(catalog(), zoo, out_name, advance, vae_steps=vae_steps,
                                                       diffusion_steps=diffusion_steps, latent=latent, seed=seed)
    _trained(result)


@pdiff_app.command("train")
def pdiff_train(
    ref: str = typer.Argument(..., help="A trained model; its last layer (or --subset) is learned."),
    task: str = typer.Option(..., "--task", help="The task it was trained on."),
    out_name: Optional[str] = out_option("Catalog name of the generator.", default="generate-pdiff-train-HASH"),
    checkpoints: Optional[int] = typer.Option(None, "--checkpoints", help="Checkpoints to collect [default: 200]."),
    subset: list[str] = typer.Option([], "--subset", help="Tensor to generate (repeat) [default: the last layer]."),
    seed: int = seed_option("Seed."),
) -> None:
    """Collect checkpoints of a parameter subset by continued training, and learn them.

    Example: zoo generate p-diff train my-mlp --task digits --checkpoints 50 --out pdiff"""
    with item_progress("training generator") as advance:
        result = _frontend().pdiff_train(catalog(), ref, task, out_name, advance,
                                                       checkpoints=checkpoints, subset=subset or None, seed=seed)
    _trained(result)


def _sample(generator: str, task: Optional[str], n: int, seed: int, steps: int, finetune_steps: int,
            as_json: bool) -> None:
    with item_progress("sampling", total=n) as advance:
        results = _frontend().sample(catalog(), generator, task, n, seed, steps, finetune_steps, advance)
    rows = [{"ref": r.entry.ref, "reused": r.reused, **(r.entry.metrics or {})} for r in results]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in row.items() if isinstance(v, float))
        out.print(f"{'reused' if row['reused'] else 'sampled'} [bold]{row['ref']}[/bold]  {shown}")
    key = next((k for k in rows[0] if k.endswith("/accuracy") and "generated" not in k), None)
    if key:
        mean = sum(r[key] for r in rows) / len(rows)
        out.print(f"{len(rows)} models, mean {key} = {mean:.4f}")


@d2nwg_app.command("sample")
def d2nwg_sample(
    generator: str = typer.Argument(..., help="A D2NWG generator."),
    task: str = typer.Option(..., "--task", help="The dataset to generate weights for (any task of its kind, also unseen ones)."),
    n: int = typer.Option(20, "--n", help="How many models."),
    seed: int = seed_option("Sampling seed (same seed, same models)."),
    steps: int = typer.Option(50, "--steps", help="DDIM steps."),
    finetune_steps: int = typer.Option(0, "--finetune-steps", help="Training steps on the task after sampling."),
    as_json: bool = json_option("Print the results as JSON."),
) -> None:
    """Sample models for a dataset; each is registered (lineage: generator) and evaluated.

    Example: zoo generate d2nwg sample gen --task digits:perm7 --n 10 --seed 1"""
    _sample(generator, task, n, seed, steps, finetune_steps, as_json)


@pdiff_app.command("sample")
def pdiff_sample(
    generator: str = typer.Argument(..., help="A p-diff generator."),
    n: int = typer.Option(20, "--n", help="How many models."),
    seed: int = seed_option("Sampling seed."),
    steps: int = typer.Option(50, "--steps", help="DDIM steps."),
    as_json: bool = json_option("Print the results as JSON."),
) -> None:
    """Sample models (the base model with a generated parameter subset), evaluated on its task.

    Example: zoo generate p-diff sample pdiff --n 10"""
    _sample(generator, None, n, seed, steps, 0, as_json)
