"""`zoo merge`: the merging package's command, added to the `zoo` CLI through its plugin."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from zoo.command_kit import (catalog, device_option, json_option, no_cache_option, out_option, seed_option,
                             tag_option)
from zoo.console import human_bytes, human_count, out as out_console, print_json

app = typer.Typer()


def install(root: typer.Typer) -> None:
    root.add_typer(app)


def _method_help() -> str:
    from .methods.names import method_names

    return f"One of: {', '.join(method_names())} (evaluated ones take --set task=...)."


@app.command()
def merge(
    config: Optional[Path] = typer.Argument(None, help="A mergekit YAML file (merge_method, base_model, models, parameters, dtype, out_dtype)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help=_method_help()),
    base: Optional[str] = typer.Option(None, "--base", "-b", help="Base model (catalog ref or path)."),
    model: List[str] = typer.Option([], "--model", help="Model to merge (repeatable; ref or path)."),
    weight: List[float] = typer.Option([], "--weight", "-w", help="Weight per --model, in order."),
    set_: List[str] = typer.Option([], "--set", help="Method parameter KEY=VALUE, e.g. density=0.5, lambda=0.8, t=0.3 (repeatable)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Output dtype, as mergekit's dtype (math is float32)."),
    out_dtype: Optional[str] = typer.Option(None, "--out-dtype", help="Output dtype [default: the inputs']."),
    out: Optional[str] = out_option("Catalog name of the result [default: merge-METHOD-HASH]."),
    device: str = device_option(),
    seed: int = seed_option("Seed for DARE's random drop."),
    workers: int = typer.Option(2, "--workers", help="Tensors merged in parallel."),
    tag: List[str] = tag_option(),
    no_cache: bool = no_cache_option("Merge again even if the same merge was recorded."),
    as_json: bool = json_option("Print the result entry as JSON."),
) -> None:
    """Merge models into a new catalog entry (mergekit YAML, or flags).

    Examples: zoo merge ties.yaml --out my-merge
              zoo merge --method ties --base llama --model ft-a --model ft-b -w 0.5 -w 0.5 --set density=0.5
              zoo merge --method greedy_soup --model ft-a --model ft-b --model ft-c --set task=digits
              zoo merge --method lambda_search --base vit --model ft-a --set task=digits --set "lambdas=[0.5,1]"
    """
    from zoo.console import item_progress

    from .frontend import merge_command, search_summary

    cat = catalog()
    result = merge_command(
        cat, str(config) if config else None, method, base, model, weight, set_, dtype=dtype, out_dtype=out_dtype,
        out=out, device=device, seed=seed, workers=workers, reuse=not no_cache, tags=tag, progress_factory=item_progress)
    e = result.entry
    if as_json:
        print_json({**cat.show(e), "reused": result.reused, "seconds": result.seconds})
        return
    if result.reused:
        out_console.print(f"reused {e.ref}: the same merge of the same inputs was already recorded (--no-cache to redo)")
    else:
        out_console.print(f"merged [bold]{e.ref}[/bold] in {result.seconds:.2f} s  ({human_count(e.num_params)} params, {e.dtype}, {human_bytes(e.bytes)})")
    chosen = search_summary(cat, e)
    if chosen:
        out_console.print(chosen)
