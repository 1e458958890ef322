"""The generators package's commands, added to the `zoo` CLI through its plugin:
`zoo expand`, `zoo population` and the `zoo generate` group."""
from __future__ import annotations

from typing import List, Optional

import typer

from zoo.command_kit import catalog, device_option, no_cache_option, out_option, seed_option, tag_option
from zoo.console import human_bytes, human_count, out as out_console

app = typer.Typer()


def install(root: typer.Typer) -> None:
    from . import commands_generate, commands_population

    root.add_typer(app)
    root.add_typer(commands_population.app)
    root.add_typer(commands_generate.app, name="generate")


@app.command()
def expand(
    ref: str = typer.Argument(..., help="The model to expand (catalog reference)."),
    method: str = typer.Option("lemon", "--method", help="lemon (lossless), bert2bert (bert2BERT FPI), bert2bert_aki "
                               "(bert2BERT AKI: added units from the next layer) or net2net (baseline)."),
    hidden_size: Optional[int] = typer.Option(None, "--hidden-size", help="Target hidden size [default: unchanged]."),
    num_layers: Optional[int] = typer.Option(None, "--num-layers", help="Target depth (lemon, net2net: at most 2x; "
                                             "bert2bert: any, by stacking) [default: unchanged]."),
    num_heads: Optional[int] = typer.Option(None, "--num-heads", help="Target heads [default: hidden / head_dim]."),
    intermediate_size: Optional[int] = typer.Option(None, "--intermediate-size", help="Target MLP width [default: scaled with hidden]."),
    depth_init: Optional[str] = typer.Option(None, "--depth-init", help="lemon: new layers' output projections, "
                                             "cancel (non-zero, cancelling) or zero (the reference code's rule) [default: cancel]."),
    seed: int = seed_option("Seed of the random splits and unit maps."),
    out: Optional[str] = out_option(default="expand-METHOD-HASH"),
    tag: List[str] = tag_option(),
    no_cache: bool = no_cache_option("Expand again even if recorded."),
    device: str = device_option(),
) -> None:
    """Grow a model to a larger width and/or depth: with the same function (LEMON), or by
    bert2BERT's FPI/AKI or Net2Net.

    Example: zoo expand gpt2-small --hidden-size 1024 --num-layers 24 --out gpt2-grown
    """
    from zoo.console import item_progress

    from .frontend import expand_command

    cat = catalog()
    result = expand_command(
        cat, ref, method, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
        intermediate_size=intermediate_size, seed=seed, out=out, tags=tag, reuse=not no_cache, depth_init=depth_init,
        progress_factory=item_progress, device=device)
    e = result.entry
    verb = "reused" if result.reused else "expanded into"
    out_console.print(f"{verb} [bold]{e.ref}[/bold]  ({human_count(e.num_params)} params, {e.dtype}, {human_bytes(e.bytes)})")
