"""`zoo moe`: mergekit-moe's command, a Mixtral-style mixture of experts as a catalog entry.
Installed by `merging.commands.install`; imports nothing heavy until it runs."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from zoo.command_kit import (catalog, device_option, json_option, no_cache_option, out_option, seed_option,
                             tag_option)
from zoo.console import human_bytes, human_count, out as out_console

from .run_report import reported

app = typer.Typer()


def install(root: typer.Typer) -> None:
    root.add_typer(app)


@app.command()
def moe(
    config: Path = typer.Argument(..., help="A mergekit-moe YAML file: base_model, gate_mode (hidden, hidden_avg, "
                                  "cheap_embed, random, uniform_random), dtype, experts_per_token, and experts "
                                  "(source_model, positive_prompts, negative_prompts, noise_scale, residual_scale)."),
    out: Optional[str] = out_option("Catalog name of the result [default: merge-moe-HASH]."),
    seed: int = seed_option("Seed for random gates and expert noise (mergekit-moe's --random-seed)."),
    device: str = device_option("Where the base reads the prompts (gate_mode hidden): cpu, cuda, cuda:N or auto."),
    out_shard_size: Optional[str] = typer.Option(None, "--out-shard-size", help="Bytes per output shard: 5B, 500M "
                                                 "(as mergekit) or 2GB, 500MiB [default: 5GB]."),
    allow_all_same: bool = typer.Option(False, "--i-understand-this-is-not-useful-without-training",
                                        help="Build it even when every expert is the same model (to train it "
                                        "afterwards)."),
    tag: List[str] = tag_option(),
    no_cache: bool = no_cache_option("Build again even if the same MoE was recorded."),
    as_json: bool = json_option("Print the result entry as JSON."),
) -> None:
    """Build a Mixtral-style mixture of experts from dense Llama/Mistral models (mergekit-moe).

    The base gives attention, norms, embeddings and tokenizer; each expert gives its MLPs; each
    layer's router comes from gate_mode: the base's hidden states on each expert's prompts
    (hidden), their token embeddings (cheap_embed), or random numbers (random). The result loads
    with transformers' MixtralForCausalLM; its lineage lists the base and every expert.

    Example: zoo moe moe.yaml --out my-moe
    """
    from zoo.console import item_progress

    from .frontend import shard_size
    from .moe.config import load
    from .moe.operator import build_moe

    cfg = load(config)
    cat = catalog()
    with item_progress("building the MoE") as advance:
        result = build_moe(cat, cfg, seed=seed, allow_all_same=allow_all_same, out=out, tags=tag, reuse=not no_cache,
                           device=device, progress=advance, max_shard_size=shard_size(out_shard_size))
    e = result.entry
    if reported(cat, result, as_json, "MoE of the same models"):
        return
    out_console.print(f"built [bold]{e.ref}[/bold] in {result.seconds:.2f} s  ({len(cfg.experts)} experts, "
                      f"{cfg.experts_per_token} per token, {human_count(e.num_params)} params, {e.dtype}, "
                      f"{human_bytes(e.bytes)})")
