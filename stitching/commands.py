"""`zoo stitch ...` and `zoo learngene ...`: the stitching package's commands, added to the
`zoo` CLI through its plugin."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from zoo.command_kit import catalog, json_option, metrics_line, no_cache_option, out_option, seed_option, tag_option
from zoo.console import human_count, item_progress, out, print_json

stitch_app = typer.Typer(help="Stitch a family of pretrained models into one network of many sizes (SN-Net).\n\n"
                              "Example: zoo stitch ls snnet --pareto",
                         no_args_is_help=True)


def install(root: typer.Typer) -> None:
    root.add_typer(stitch_app, name="stitch")
    root.add_typer(learngene_app, name="learngene")


def _frontend():
    """The stitching front-end helpers, imported when a command runs (not for --help)."""
    from . import frontend

    return frontend


def _done(verb: str, result) -> None:
    e = result.entry
    out.print(f"{'reused' if result.reused else verb} [bold]{e.ref}[/bold]  ({human_count(e.num_params)} params)  "
              f"{metrics_line(e.metrics)}")


@stitch_app.command("build")
def stitch_build(
    anchor: List[str] = typer.Option(..., "--anchor", "-a", help="Anchor model (repeat; 2 or more of one family, any order)."),
    task: str = typer.Option(..., "--task", help="Task to train and evaluate on (digits, pytext, ...)."),
    out_name: Optional[str] = out_option("Catalog name of the stitched network.", default="stitch-snnet-HASH"),
    version: str = typer.Option("v1", "--version", help="v1 (small-to-large, sliding window) or v2 (two-way: SL, LS, LSL, SLS)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Passes over the training split [default: none: --steps decides]."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Training steps instead of --epochs [default: 200]."),
    lr: float = typer.Option(5e-4, "--lr", help="Learning rate (AdamW)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Examples per step."),
    sampling: Optional[str] = typer.Option(None, "--sampling", help="uniform or flops (v2's FLOPs groups) [default: by version]."),
    lora_rank: int = typer.Option(0, "--lora-rank", help="v2: low-rank stitching layers on a frozen least-squares init."),
    freeze_anchors: bool = typer.Option(False, "--freeze-anchors", help="Train only the stitching layers."),
    distill: float = typer.Option(0.0, "--distill", help="Weight of distillation from the teacher (0 to 1)."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Teacher for --distill [default: the largest anchor]."),
    seed: int = seed_option("Seed of config sampling and data order."),
    no_cache: bool = no_cache_option("Build again even if recorded."),
    tag: List[str] = tag_option(),
) -> None:
    """Build a stitched network: least-squares init of the stitching layers, brief training
    with one sampled configuration per step (under accelerate), then every configuration's
    params, FLOPs and accuracy are measured and stored with the network.

    Example: zoo stitch build -a vit-ti -a vit-s -a vit-b --task digits --epochs 5 --out snnet
    """
    fe = _frontend()
    n_steps = fe.steps_for(task, epochs, steps, batch_size)
    with item_progress("stitching") as advance:
        result = fe.build(catalog(), anchor, task, out_name, teacher=teacher, reuse=not no_cache, progress=advance,
                          tags=tag, version=version, steps=n_steps, lr=lr, batch_size=batch_size, sampling=sampling,
                          lora_rank=lora_rank, train_anchors=not freeze_anchors, distill=distill, seed=seed)
    _done("stitched", result)


@stitch_app.command("ls")
def stitch_ls(
    ref: str = typer.Argument(..., help="A stitched network (or an exported configuration)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw accuracy vs FLOPs (PNG) to this file [default: no plot]."),
    pareto: bool = typer.Option(False, "--pareto", help="Only configurations on the Pareto front."),
    as_json: bool = json_option("Print the configurations as JSON."),
) -> None:
    """List a stitched network's configurations: route, params, FLOPs, accuracy.

    Example: zoo stitch ls snnet --pareto --plot snnet.png"""
    from zoo.tables import Column, print_table

    fe = _frontend()
    config, configs = fe.network(catalog(), ref)
    st = config["stitched"]
    shown = [c for c in configs if c.stats.get("pareto") or not pareto]
    if plot is not None:
        from .plot import pareto_plot

        metric = next((k for k in ("test/accuracy", "test/loss") if k in configs[0].stats), "test/accuracy")
        pareto_plot(configs, metric, plot, title=f"{ref}: {len(configs)} configurations",
                    anchor_names=st.get("anchor_refs"), higher_is_better=metric.endswith("accuracy"))
    if as_json:
        print_json([c.to_json() for c in shown])
        return
    metrics = sorted({k for c in configs for k in c.stats if k.startswith("test/")})
    columns = [Column(col, fixed=col != "route", justify="right" if col not in ("kind", "route") else "left",
                      min_width=16) for col in ("id", "kind", "route", "params", "MFLOPs", *metrics, "pareto")]
    print_table(columns, [(str(c.id), c.kind, c.describe(), human_count(c.stats.get("params")),
                           f"{c.stats.get('flops', 0) / 1e6:.2f}",
                           *(f"{c.stats.get(m, float('nan')):.4f}" for m in metrics),
                           "*" if c.stats.get("pareto") else "") for c in shown])
    if plot is not None:
        out.print(f"plot written to {plot}")


@stitch_app.command("export")
def stitch_export(
    ref: str = typer.Argument(..., help="The stitched network."),
    config_id: Optional[int] = typer.Option(None, "--config", help="Configuration id (see `zoo stitch ls`) [default: none: give it or --budget-flops]."),
    budget_flops: Optional[float] = typer.Option(None, "--budget-flops", help="Instead: the best (validation) configuration within this many FLOPs per example, e.g. 5e6 [default: none]."),
    out_name: Optional[str] = out_option("Catalog name [default: NETWORK-cID]."),
    tag: List[str] = tag_option(),
) -> None:
    """Export one configuration as a standalone checkpoint (anchors export as plain models).

    Example: zoo stitch export snnet --budget-flops 5e6 --out snnet-small"""
    result = _frontend().export(catalog(), ref, config_id, budget_flops, out_name, tags=tag)
    _done("exported", result)


learngene_app = typer.Typer(help="Learngenes: small reusable parts of a large model that build models of many sizes "
                                 "(Learngene Pool, SWS).\n\nExample: zoo learngene sws --teacher vit-b --task digits "
                                 "--out gene", no_args_is_help=True)


@learngene_app.command("pool")
def learngene_pool(
    teacher: str = typer.Option(..., "--teacher", help="The large pretrained model to distil."),
    task: str = typer.Option(..., "--task", help="Task to distil and fine-tune on."),
    aux_hidden: List[int] = typer.Option([], "--aux-hidden", help="Hidden size of an auxiliary model (repeat) [default: teacher/4, teacher/2]."),
    aux_depth: List[int] = typer.Option([], "--aux-depth", help="Blocks of a group of auxiliary models (repeat; each group is stitched within itself) [default: 1/2 and 3/4 of the teacher's]."),
    positions: str = typer.Option("front_end", "--positions", help="Self-attention distillation positions: front_end or end."),
    distill_steps: int = typer.Option(300, "--distill-steps", help="Distillation steps."),
    steps: int = typer.Option(200, "--steps", help="Pool fine-tuning steps (one stitched path per step)."),
    alpha: float = typer.Option(0.1, "--alpha", help="Weight of the hard-label loss (the rest: soft logits + block and self-attention MSE)."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    batch_size: int = typer.Option(64, "--batch-size", help="Examples per step."),
    seed: int = seed_option("Seed."),
    out_name: Optional[str] = out_option("Catalog name of the pool.", default="learngene-pool-HASH"),
) -> None:
    """Distil a teacher into small auxiliary models, stitch their blocks into
    variable-sized models (a stitched network: see `zoo stitch ls/export`), fine-tune.

    Example: zoo learngene pool --teacher vit-b --task digits --aux-hidden 32 --aux-hidden 64 --out pool"""
    from zoo.catalog import Parent
    from zoo.runner import run_operator

    cat = catalog()
    params = {"task": task, "aux_hidden": aux_hidden, "aux_depths": aux_depth, "positions": positions, "distill_steps": distill_steps,
              "steps": steps, "alpha": alpha, "lr": lr, "batch_size": batch_size, "seed": seed}
    with item_progress("distilling") as advance:
        result = run_operator(cat, "learngene.pool", [Parent(cat.get(teacher).id, "teacher")],
                              {k: v for k, v in params.items() if v is not None}, out_name, progress=advance)
    _done("built pool", result)


@learngene_app.command("sws")
def learngene_sws(
    teacher: str = typer.Option(..., "--teacher", help="The pretrained ViT to distil."),
    task: str = typer.Option(..., "--task", help="Task to distil on."),
    stages: int = typer.Option(3, "--stages", help="Stages; each keeps one shared layer."),
    stage_length: int = typer.Option(2, "--stage-length", help="Layers per stage while training (all sharing weights)."),
    hidden_size: Optional[int] = typer.Option(None, "--hidden-size", help="Width of the learngene [default: the teacher's]."),
    steps: int = typer.Option(200, "--steps", help="Distillation steps."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate."),
    alpha: float = typer.Option(0.5, "--alpha", help="Weight of the soft KL to the teacher."),
    seed: int = seed_option("Seed."),
    out_name: Optional[str] = out_option("Catalog name of the learngene.", default="learngene-sws-HASH"),
) -> None:
    """Distil a teacher into an SWS learngene: stages whose layers share weights, kept as
    one layer per stage (expand it with `zoo learngene expand`).

    Example: zoo learngene sws --teacher vit-b --task digits --stages 3 --out gene"""
    with item_progress("distilling") as advance:
        result = _frontend().sws(catalog(), teacher, task, out_name, progress=advance, stages=stages, stage_length=stage_length,
                         hidden_size=hidden_size, steps=steps, lr=lr, alpha=alpha, seed=seed)
    _done("distilled", result)


@learngene_app.command("expand")
def learngene_expand(
    gene: str = typer.Argument(..., help="An SWS learngene."),
    depths: str = typer.Option(..., "--depths", help="Layers per stage, comma-separated, e.g. 2,2,2 (the training lengths reproduce the auxiliary model)."),
    out_name: Optional[str] = out_option("Catalog name of the new model.", default="learngene-expand-HASH"),
) -> None:
    """Initialise a ViT of any depth from a learngene by repeating each stage's layer.

    Example: zoo learngene expand gene --depths 2,3,2 --out vit-7"""
    from zoo.errors import ZooError

    try:
        counts = [int(d) for d in depths.split(",")]
    except ValueError:
        raise ZooError(f"--depths {depths!r}: give whole numbers separated by commas, e.g. 2,2,2") from None
    result = _frontend().expand_learngene(catalog(), gene, counts, out_name)
    _done("expanded into", result)
