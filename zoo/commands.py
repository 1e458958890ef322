"""The `zoo` commands: catalog commands (init, add, ls, show, tensors, diff, lineage, verify,
tag, metric, rm, export, runs, demo) and thin front ends of operators (merge, expand), which
load their operator package by name through the registry."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .cli import app, catalog, catalog_target
from .console import byte_progress, err, human_bytes, human_count, out, parse_assignments, print_json
from .console import out as out_console
from .errors import ZooError

DEVICE_HELP = "Where the tensor math runs: cpu, cuda (every visible GPU, tensors dealt out), cuda:N, auto, or a list."


def _parse_parent(text: str):
    """REF[:ROLE[:WEIGHT]] -> Parent."""
    from .catalog import Parent

    parts = text.rsplit(":", 2) if text.count(":") >= 2 else text.split(":")
    ref = parts[0]
    role = parts[1] if len(parts) > 1 and parts[1] else "base"
    weight = None
    if len(parts) > 2:
        try:
            weight = float(parts[2])
        except ValueError:
            raise ZooError(f"--parent {text!r}: weight {parts[2]!r} is not a number") from None
    return Parent(ref, role, weight)


@app.command()
def init() -> None:
    """Create the catalog database (done automatically on first use too)."""
    cat = catalog()
    out.print(f"catalog ready: {cat.where} ({cat.count()} models); store: {cat.store}")


@app.command()
def add(
    path: Path = typer.Argument(..., help="HF folder, .safetensors file, or .bin/.pt/.pth (converted)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Catalog name [default: folder or file name]."),
    copy: bool = typer.Option(False, "--copy", help="Copy the files into the store instead of indexing in place."),
    tag: List[str] = typer.Option([], "--tag", "-t", help="Tag to attach (repeatable)."),
    parent: List[str] = typer.Option([], "--parent", "-p", help="Lineage parent as REF[:ROLE[:WEIGHT]], role defaults to 'base' (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the entry as JSON."),
) -> None:
    """Register a checkpoint: hash its files, read its config, record it (new version if the name exists).

    Example: zoo add ./my-llama --name llama-base --tag base
    """
    from .checkpoint import Checkpoint

    cat = catalog()
    parents = [_parse_parent(p) for p in parent]
    ckpt = Checkpoint.open(path)
    total = sum((ckpt.root / f).stat().st_size for f in ckpt.files())
    with byte_progress("copying" if copy else "hashing", total) as advance:
        result = cat.add(path, name, copy=copy, tags=tag, parents=parents, progress=advance)
    e = result.entry
    if as_json:
        print_json({**cat.show(e), "created": result.created})
        return
    if result.created:
        out.print(f"added [bold]{e.ref}[/bold]  {e.family or '?'}  {human_count(e.num_params)} params  {e.dtype}  {human_bytes(e.bytes)}  id={e.id}")
    else:
        out.print(f"already catalogued as [bold]{e.ref}[/bold] (identical bytes); nothing added")


@app.command("ls")
def list_models(
    family: Optional[str] = typer.Option(None, "--family", "-f", help="Only this family (e.g. llama, vit)."),
    tag: Optional[str] = typer.Option(None, "--tag", "-t", help="Only models with this tag."),
    name: Optional[str] = typer.Option(None, "--name", help="Name pattern, '*' as wildcard."),
    as_json: bool = typer.Option(False, "--json", help="JSON array, one object per model (see README for the schema)."),
) -> None:
    """List catalogued models."""
    from .catalog.reader import ls_json, ls_rows, open_sqlite_readonly

    fast = open_sqlite_readonly(catalog_target())  # an existing SQLite catalog: no ORM needed
    if as_json and fast:
        stored = ls_json(fast, family, tag, name)
        if stored is not None:
            sys.stdout.buffer.write(stored + b"\n")
            return
    rows = ls_rows(fast, family, tag, name) if fast else catalog().ls(family=family, tag=tag, name=name)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    wide = out.width >= 140  # the location only when there is room for it
    columns = ("ref", "id", "family", "params", "dtype", "size", "tags", "metrics") + (("location",) if wide else ())
    for col_name in columns:
        fixed = col_name in ("ref", "id", "family", "params", "dtype", "size")
        table.add_column(col_name, no_wrap=fixed, overflow="fold", min_width=12 if col_name == "metrics" else None)
    for r in rows:
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in list(r["metrics"].items())[:2])
        cells = [r["ref"], str(r["id"]), r["family"] or "-", human_count(r["params"]), r["dtype"] or "-",
                 human_bytes(r["bytes"]), ",".join(r["tags"]), metrics]
        table.add_row(*cells, *([r["location"]] if wide else []))
    out.print(table if rows else "[dim]no models (add one with `zoo add PATH`, or try `zoo demo`)[/dim]")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@app.command()
def show(ref: str = typer.Argument(..., help="name, name@VERSION or id."),
         as_json: bool = typer.Option(False, "--json", help="Everything as one JSON object.")) -> None:
    """Show one model: metadata, files and digests, family shape, lineage, run."""
    info = catalog().show(ref)
    from .families import widths_summary

    info["widths"] = widths_summary(info["config"])
    if as_json:
        print_json(info)
        return
    from rich.table import Table

    t = Table.grid(padding=(0, 2))
    for key in ("ref", "id", "family", "architecture", "params", "dtype", "bytes", "location", "digest", "tags", "metrics", "created"):
        val = info[key]
        if key == "params":
            val = f"{val:,} ({human_count(val)})"
        elif key == "bytes":
            val = human_bytes(val)
        elif isinstance(val, (list, dict)):
            val = json.dumps(val) if val else "-"
        t.add_row(f"[bold]{key}[/bold]", str(val if val is not None else "-"))
    cfg = info["config"] or {}
    summary = {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                   "vocab_size", "n_embd", "n_layer", "n_head", "image_size", "patch_size") if k in cfg}
    if summary:
        t.add_row("[bold]config[/bold]", ", ".join(f"{k}={v}" for k, v in summary.items()))
    if info.get("widths"):
        w = info["widths"]
        t.add_row("[bold]shape[/bold]", f"{w['layers']} layers, hidden {w['hidden']}, {w['heads']} heads "
                  f"({w['kv_heads']} kv) x {w['head_dim']}, mlp {w['intermediate']}, norm {w['norm']}")
    for p in info["parents"]:
        weight = "" if p["weight"] is None else f", w={p['weight']:g}"
        t.add_row("[bold]parent[/bold]", f"{p['parent']} ({p['role']}{weight})")
    for c in info["children"]:
        t.add_row("[bold]child[/bold]", f"{c['child']} ({c['role']})")
    if info["run"]:
        r = info["run"]
        t.add_row("[bold]made by[/bold]", f"run {r['id']}: {r['operator']} {json.dumps(r['params'])}")
    out.print(t)
    files = Table(box=None, header_style="bold")
    for c in ("file", "size", "sha256"):
        files.add_column(c)
    for f in info["files"]:
        files.add_row(f["path"], human_bytes(f["size"]), f["sha256"])
    out.print(files)


@app.command()
def tensors(ref: str = typer.Argument(..., help="Catalog reference, or a path to a checkpoint."),
            match: Optional[str] = typer.Option(None, "--match", "-m", help="Only names containing this text."),
            as_json: bool = typer.Option(False, "--json", help="JSON array of {name, shape, dtype, params, file}.")) -> None:
    """List a model's tensors (names, shapes, dtypes) from headers, without loading weights."""
    ckpt = _open_ref_or_path(ref)
    rows = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "params": t.numel, "file": t.file}
            for t in ckpt.tensors.values() if not match or match in t.name]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for c in ("name", "shape", "dtype", "params"):
        table.add_column(c, justify="right" if c == "params" else "left")
    for r in rows:
        table.add_row(r["name"], "x".join(map(str, r["shape"])) or "scalar", r["dtype"], f"{r['params']:,}")
    out.print(table)
    out.print(f"[dim]{len(rows)} tensors, {sum(r['params'] for r in rows):,} parameters[/dim]")


def _open_ref_or_path(ref: str):
    from .checkpoint import Checkpoint
    from .errors import NotFoundError

    try:
        return catalog().open(ref)
    except NotFoundError:
        if Path(ref).exists():
            return Checkpoint.open(ref)
        raise


@app.command()
def diff(a: str = typer.Argument(..., help="First model (reference or path)."),
         b: str = typer.Argument(..., help="Second model (reference or path)."),
         top: int = typer.Option(0, "--top", help="Only the N most changed tensors (0 = all)."),
         as_json: bool = typer.Option(False, "--json", help="JSON array of per-tensor results.")) -> None:
    """Per-tensor relative change ||B-A|| / ||A|| of two models with the same tensor names."""
    from .compare import diff_checkpoints
    from .console import item_progress

    ca, cb = _open_ref_or_path(a), _open_ref_or_path(b)
    if not set(ca.names()) & set(cb.names()):
        raise ZooError(f"{a} and {b} share no tensor names; they are different architectures")
    with item_progress("comparing", len(ca.names())):
        rows = diff_checkpoints(ca, cb)
    same = sorted((r for r in rows if r.status == "same-shape"), key=lambda r: -(r.rel_change or 0))
    other = [r for r in rows if r.status != "same-shape"]
    if top:
        same = same[:top]
    if as_json:
        print_json([{"name": r.name, "status": r.status, "rel_change": r.rel_change, "max_abs": r.max_abs,
                     "shape_a": list(r.shape_a) if r.shape_a else None,
                     "shape_b": list(r.shape_b) if r.shape_b else None} for r in same + other])
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for c in ("tensor", "rel change", "max |Δ|", "note"):
        table.add_column(c)
    for r in same:
        table.add_row(r.name, f"{r.rel_change:.3e}", f"{r.max_abs:.3e}", "identical" if r.max_abs == 0 else "")
    for r in other:
        table.add_row(r.name, "-", "-", {"only-a": "only in A", "only-b": "only in B"}.get(r.status, f"shape {list(r.shape_a)} vs {list(r.shape_b)}"))
    out.print(table)


@app.command()
def lineage(ref: str = typer.Argument(..., help="Catalog reference."),
            fmt: str = typer.Option("tree", "--format", help="tree (terminal), dot (Graphviz text) or png."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="File for dot/png [png default: REF-lineage.png]."),
            show_recipe: bool = typer.Option(False, "--recipe", help="Also print the runs that reproduce the model (JSON).")) -> None:
    """Show a model's family tree: what it was made from and what was made from it."""
    from .provenance import lineage_graph, recipe, render_tree, to_dot, to_png

    cat = catalog()
    entry = cat.get(ref)
    g = lineage_graph(cat, entry)
    if fmt == "tree":
        out.print(render_tree(g, entry.id))
    elif fmt == "dot":
        text = to_dot(g)
        if output:
            output.write_text(text)
            err.print(f"wrote {output}")
        else:
            out.print(text, end="", markup=False, highlight=False)
    elif fmt == "png":
        path = to_png(g, output or Path(f"{entry.name.replace('/', '_')}-v{entry.version}-lineage.png"))
        out.print(f"wrote {path}")
    else:
        raise ZooError(f"unknown --format {fmt!r} (use tree, dot or png)")
    if show_recipe:
        print_json(recipe(cat, entry))


@app.command()
def verify(ref: Optional[str] = typer.Argument(None, help="One model; all models if omitted."),
           as_json: bool = typer.Option(False, "--json", help="JSON array of {ref, ok, problems}.")) -> None:
    """Re-hash files and report any that are missing or changed (exit 1 if any)."""
    cat = catalog()
    entries = [cat.get(ref)] if ref else None
    total = sum(e.bytes for e in entries) if entries else sum(r["bytes"] for r in cat.ls())
    with byte_progress("verifying", total) as advance:
        results = cat.verify(ref, progress=advance)
    bad = [r for r in results if not r.ok]
    if as_json:
        print_json([{"ref": r.ref, "ok": r.ok, "problems": r.problems} for r in results])
    else:
        for r in results:
            out.print(f"[green]ok[/green]      {r.ref}" if r.ok else f"[red]FAILED[/red]  {r.ref}: " + "; ".join(r.problems))
    if bad:
        raise typer.Exit(1)


@app.command()
def tag(ref: str = typer.Argument(...), tags: List[str] = typer.Argument(..., help="Tags to add (or remove with --remove)."),
        remove: bool = typer.Option(False, "--remove", "-r", help="Remove the tags instead.")) -> None:
    """Add or remove tags on a model."""
    now = catalog().tag(ref, remove=tags) if remove else catalog().tag(ref, add=tags)
    out.print(f"{catalog().get(ref).ref}: tags = {', '.join(now) or '-'}")


@app.command()
def metric(ref: str = typer.Argument(...),
           values: List[str] = typer.Argument(..., help="KEY=VALUE pairs; values are read as YAML/JSON (numbers, lists) when they can be.")) -> None:
    """Record free-form metrics on a model (e.g. zoo metric m acc=0.93 task=digits)."""
    now = catalog().set_metrics(ref, parse_assignments(values, "metric"))
    out.print(f"{catalog().get(ref).ref}: metrics = {json.dumps(now)}")


@app.command()
def rm(ref: str = typer.Argument(...),
       force: bool = typer.Option(False, "--force", help="Remove even if other models descend from it (cuts their lineage)."),
       keep_files: bool = typer.Option(False, "--keep-files", help="Keep store files of copied/produced models.")) -> None:
    """Remove a model from the catalog. Files indexed in place are never deleted."""
    e = catalog().remove(ref, force=force, keep_files=keep_files)
    out.print(f"removed {e.ref}" + (" and its store files" if e.owned and not keep_files else ""))


@app.command()
def export(ref: str = typer.Argument(...), target: Path = typer.Argument(..., help="New folder to create.")) -> None:
    """Copy a model's files to a new folder (digests checked while copying)."""
    cat = catalog()
    e = cat.get(ref)
    with byte_progress("exporting", e.bytes) as advance:
        path = cat.export(e, target, progress=advance)
    out.print(f"exported {e.ref} to {path}")


@app.command()
def runs(limit: int = typer.Option(20, "--limit", help="How many recent runs."),
         as_json: bool = typer.Option(False, "--json", help="JSON array of runs.")) -> None:
    """Recent operator runs: what ran, with which params, producing what."""
    from .catalog.records import run_row

    rows = [run_row(r) for r in catalog().runs(limit)]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for c in ("id", "operator", "inputs", "outputs", "seconds", "params"):
        table.add_column(c)
    for r in rows:
        table.add_row(str(r["id"]), r["operator"], ", ".join(i.get("ref", "?") for i in r["inputs"]),
                      ", ".join(o["ref"] for o in r["outputs"]), f"{r['seconds']:.2f}" if r["seconds"] else "-",
                      json.dumps(r["params"]))
    out.print(table)


@app.command()
def demo(steps: int = typer.Option(60, "--steps", help="Training steps per model."),
         seed: int = typer.Option(0, "--seed", help="Random seed.")) -> None:
    """Build a small demo zoo: a tiny Llama pretrained on Python's own sources, two
    fine-tunes on different packages and their TIES merge, all registered with lineage;
    then list it and show the family tree."""
    from .demo import build_demo_zoo

    cat = catalog()
    made = build_demo_zoo(cat, steps=steps, seed=seed, log=lambda msg: err.print(msg))
    list_models(family=None, tag="demo", name=None, as_json=False)
    out.print()
    lineage(made[0].ref, fmt="tree", output=None, show_recipe=False)


@app.command()
def merge(
    config: Optional[Path] = typer.Argument(None, help="A mergekit YAML file (merge_method, base_model, models, parameters, dtype, out_dtype)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="linear, task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, slerp, model_stock, widen; evaluated: greedy_soup, lambda_search, atlas (--set task=...)."),
    base: Optional[str] = typer.Option(None, "--base", "-b", help="Base model (catalog ref or path)."),
    model: List[str] = typer.Option([], "--model", help="Model to merge (repeatable; ref or path)."),
    weight: List[float] = typer.Option([], "--weight", "-w", help="Weight per --model, in order."),
    set_: List[str] = typer.Option([], "--set", help="Method parameter KEY=VALUE, e.g. density=0.5, lambda=0.8, t=0.3 (repeatable)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Output dtype, as mergekit's dtype (math is float32)."),
    out_dtype: Optional[str] = typer.Option(None, "--out-dtype", help="Output dtype [default: the inputs']."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Catalog name of the result [default: merge-METHOD-HASH]."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed for DARE's random drop."),
    workers: int = typer.Option(2, "--workers", help="Tensors merged in parallel."),
    tag: List[str] = typer.Option([], "--tag", "-t", help="Tag for the result (repeatable)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Merge again even if the same merge was recorded."),
    as_json: bool = typer.Option(False, "--json", help="Print the result entry as JSON."),
) -> None:
    """Merge models into a new catalog entry (mergekit YAML, or flags).

    Examples: zoo merge ties.yaml --out my-merge
              zoo merge --method ties --base llama --model ft-a --model ft-b -w 0.5 -w 0.5 --set density=0.5
              zoo merge --method greedy_soup --model ft-a --model ft-b --model ft-c --set task=digits
              zoo merge --method lambda_search --base vit --model ft-a --set task=digits --set "lambdas=[0.5,1]"
    """
    from .console import item_progress
    from .registry import load_frontend

    cat = catalog()
    result = load_frontend("merge").merge_command(
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
    chosen = load_frontend("merge").search_summary(cat, e)
    if chosen:
        out_console.print(chosen)


@app.command()
def expand(
    ref: str = typer.Argument(..., help="The model to expand (catalog reference)."),
    method: str = typer.Option("lemon", "--method", help="lemon (lossless), bert2bert (FPI baseline) or net2net (baseline)."),
    hidden_size: Optional[int] = typer.Option(None, "--hidden-size", help="Target hidden size [default: unchanged]."),
    num_layers: Optional[int] = typer.Option(None, "--num-layers", help="Target depth, at most 2x [default: unchanged]."),
    num_heads: Optional[int] = typer.Option(None, "--num-heads", help="Target heads [default: hidden / head_dim]."),
    intermediate_size: Optional[int] = typer.Option(None, "--intermediate-size", help="Target MLP width [default: scaled with hidden]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random splits that break symmetry."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Catalog name of the result."),
    tag: List[str] = typer.Option([], "--tag", "-t", help="Tag for the result (repeatable)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Expand again even if recorded."),
    device: str = typer.Option("cpu", "--device", help=DEVICE_HELP),
) -> None:
    """Grow a model to a larger width and/or depth with the same function (LEMON).

    Example: zoo expand gpt2-small --hidden-size 1024 --num-layers 24 --out gpt2-grown
    """
    from .console import item_progress
    from .registry import load_frontend

    cat = catalog()
    result = load_frontend("expand").expand_command(
        cat, ref, method, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
        intermediate_size=intermediate_size, seed=seed, out=out, tags=tag, reuse=not no_cache,
        progress_factory=item_progress, device=device)
    e = result.entry
    verb = "reused" if result.reused else "expanded into"
    out_console.print(f"{verb} [bold]{e.ref}[/bold]  ({human_count(e.num_params)} params, {e.dtype}, {human_bytes(e.bytes)})")


@app.command("new")
def new_cmd(
    preset: str = typer.Argument(..., help="A preset (vit-ti, vit-s, vit-b, gpt2-tiny, llama-tiny, bert-tiny) or a family (vit, gpt2, llama, bert)."),
    set_: List[str] = typer.Option([], "--set", help="Config field KEY=VALUE overriding the preset, e.g. hidden_size=64."),
    seed: int = typer.Option(0, "--seed", help="Initialisation seed."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Catalog name [default: PRESET-sSEED]."),
) -> None:
    """Create a new, randomly initialised model (to train with `zoo train`)."""
    from .training import new_model

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
    seed: int = typer.Option(0, "--seed", help="Data order seed."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Catalog name of the trained model."),
) -> None:
    """Train a model briefly on a task; the result is a new entry (lineage role `base`)
    with its training and evaluation metrics. Runs under accelerate."""
    from .console import item_progress
    from .training import train

    with item_progress("training") as advance:
        r = train(catalog(), ref, task, out, progress=advance, steps=steps, lr=lr, batch_size=batch_size,
                  schedule=schedule, warmup_steps=warmup, seed=seed)
    e = r.entry
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in (e.metrics or {}).items())
    out_console.print(f"{'reused' if r.reused else 'trained'} [bold]{e.ref}[/bold]  {shown}")


@app.command("eval")
def eval_cmd(
    ref: str = typer.Argument(..., help="The model to evaluate."),
    task: str = typer.Option(..., "--task", help="digits, digits:0-4, pytext, or a registered task."),
    split: str = typer.Option("test", "--split", help="test, val or train (digits)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a model on a task and store the metrics on its catalog entry."""
    from .training import evaluate

    metrics = evaluate(catalog(), ref, task, split)
    if as_json:
        print_json(metrics)
    else:
        out_console.print(f"{catalog().get(ref).ref}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
