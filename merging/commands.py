"""`zoo merge`: the merging package's command, added to the `zoo` CLI through its plugin."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from zoo.command_kit import (catalog, device_option, json_option, no_cache_option, out_option, seed_option,
                             tag_option)
from zoo.console import human_bytes, human_count, out as out_console, print_json

from .commands_moe import install as install_moe
from .run_report import reported

app = typer.Typer()


def install(root: typer.Typer) -> None:
    root.add_typer(app)
    install_moe(root)


def _method_help() -> str:
    from .methods.names import method_names

    return (f"One of: {', '.join(method_names())} (evaluated ones take --set task=...) "
            "[default: the config's merge_method; required without a config].")


@app.command()
def merge(
    config: Optional[Path] = typer.Argument(None, help="A mergekit YAML file (merge_method, base_model, models or slices, parameters, dtype, out_dtype); several documents (---), each with a name:, run in order as mergekit-multi does."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help=_method_help()),
    base: Optional[str] = typer.Option(None, "--base", "-b", help="Base model (catalog ref or path; BASE+ADAPTER applies a LoRA adapter on the fly) [default: none, for methods that take none]."),
    model: List[str] = typer.Option([], "--model", help="Model to merge (repeatable; ref or path; MODEL+ADAPTER applies a PEFT LoRA adapter on the fly)."),
    weight: List[float] = typer.Option([], "--weight", "-w", help="Weight per --model, in order [default: the method's weight per model, e.g. 1.0]."),
    set_: List[str] = typer.Option([], "--set", help="Method parameter KEY=VALUE, e.g. density=0.5, lambda=0.8, t=0.3 (repeatable)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="mergekit's dtype: inputs loaded and math run in it, output in it unless --out-dtype (--set compute_dtype=float32: float32 math on the inputs so loaded; --out-dtype alone: float32 math on the inputs as stored) [default: the inputs' dtype]."),
    out_dtype: Optional[str] = typer.Option(None, "--out-dtype", help="Output dtype [default: --dtype, else the inputs']."),
    out_shard_size: Optional[str] = typer.Option(None, "--out-shard-size", help="Bytes per output shard: 5B, 500M (as mergekit) or 2GB, 500MiB [default: 5GB]."),
    out: Optional[str] = out_option("Catalog name of the result.", default="merge-METHOD-HASH"),
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
    from .mergekit_config import load_documents

    # a bad file is refused before the catalog opens: a new --catalog path is not created for it
    documents = load_documents(str(config)) if config else None
    cat = catalog()
    result = merge_command(
        cat, str(config) if config else None, method, base, model, weight, set_, dtype=dtype, out_dtype=out_dtype,
        out=out, device=device, seed=seed, workers=workers, reuse=not no_cache, tags=tag, progress_factory=item_progress,
        out_shard_size=out_shard_size, documents=documents)
    steps = getattr(result, "steps", None)  # a multi-document config: one entry per document
    if steps is not None:
        if as_json:
            print_json([{**cat.show(r.entry), "document": name, "reused": r.reused, "seconds": r.seconds}
                        for name, r in steps])
            return
        for name, r in steps:
            what = "reused" if r.reused else f"merged in {r.seconds:.2f} s"
            out_console.print(f"{name or '(final)'}: [bold]{r.entry.ref}[/bold] {what}")
        return
    e = result.entry
    if not reported(cat, result, as_json, "merge of the same inputs"):
        out_console.print(f"merged [bold]{e.ref}[/bold] in {result.seconds:.2f} s  ({human_count(e.num_params)} params, {e.dtype}, {human_bytes(e.bytes)})")
    chosen = search_summary(cat, e)
    if chosen:
        out_console.print(chosen)


@app.command("extract-lora")
def extract_lora(
    finetune: str = typer.Argument(..., help="The fine-tuned model (catalog ref or path)."),
    base: str = typer.Option(..., "--base", "-b", help="The model it was fine-tuned from (catalog ref or path)."),
    rank: int = typer.Option(..., "--rank", "-r", help="Maximum LoRA rank per module (mergekit's --max-rank)."),
    distribute_scale: bool = typer.Option(True, "--distribute-scale/--no-distribute-scale", help="sqrt(S) into both A and B (else S into A)."),
    embed_lora: bool = typer.Option(False, "--embed-lora", help="Decompose embeddings and the head too (default: saved whole)."),
    save_module: List[str] = typer.Option([], "--save-module", help="Module saved whole (PEFT modules_to_save; repeatable)."),
    include: List[str] = typer.Option([], "--include", "-i", help="Regex: only matching modules are decomposed (repeatable)."),
    exclude: List[str] = typer.Option([], "--exclude", "-e", help="Regex: matching modules are not decomposed (repeatable)."),
    sv_epsilon: float = typer.Option(0.0, "--sv-epsilon", help="Also drop singular values at or below this."),
    skip_undecomposable: bool = typer.Option(False, "--skip-undecomposable", help="Leave out weights with no low-rank form, such as norms (default: saved whole)."),
    out: Optional[str] = out_option("Catalog name of the adapter.", default="merge-extract_lora-HASH"),
    tag: List[str] = tag_option(),
    no_cache: bool = no_cache_option("Extract again even if the same extraction was recorded."),
    as_json: bool = json_option("Print the adapter's entry as JSON."),
) -> None:
    """Extract a LoRA adapter from a fine-tune: truncated SVD of each weight's change from its base.

    Writes a PEFT adapter (adapter_config.json + adapter_model.safetensors) as a catalog entry with
    lineage (base, source); load it with PeftModel.from_pretrained(base_model, path), or merge with it
    as BASE+ADAPTER.

    Example: zoo extract-lora my-finetune --base llama --rank 16 --out my-lora
    """
    from zoo.catalog import Parent
    from zoo.console import item_progress
    from zoo.runner import run_operator

    from .api import resolve_input

    cat = catalog()
    params = {"rank": rank, "distribute_scale": distribute_scale, "embed_lora": embed_lora,
              "modules_to_save": save_module, "include": include, "exclude": exclude, "sv_epsilon": sv_epsilon,
              "skip_undecomposable": skip_undecomposable}
    parents = [Parent(resolve_input(cat, base), "base"), Parent(resolve_input(cat, finetune), "source")]
    with item_progress("extracting") as advance:
        result = run_operator(cat, "merge.extract_lora", parents, params, out, tags=tag, reuse=not no_cache,
                              progress=advance)
    e = result.entry
    if reported(cat, result, as_json, "extraction"):
        return
    run = cat.producing_run(e)
    ranks = (((run.timings or {}).get("notes") or {}).get("extract_lora") or {}).get("lora_ranks", {}) if run else {}
    out_console.print(f"extracted [bold]{e.ref}[/bold] in {result.seconds:.2f} s  ({len(ranks)} modules, rank "
                      f"{max(ranks.values(), default=0)}, {human_count(e.num_params)} params, {human_bytes(e.bytes)})")
