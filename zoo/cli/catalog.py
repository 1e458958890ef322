"""The catalog commands: init, add, ls, show, tensors, diff, lineage, verify, tag, metric,
rm, export, runs. They read through the catalog's read model (`zoo.catalog.views`)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..command_kit import catalog, catalog_target, fmt_metric, json_option
from ..console import byte_progress, err, human_bytes, human_count, out, parse_assignments, print_json
from ..errors import ZooError

app = typer.Typer()


def _parse_parent(text: str):
    """REF[:ROLE[:WEIGHT]] -> Parent."""
    from ..catalog import Parent

    parts = text.rsplit(":", 2) if text.count(":") >= 2 else text.split(":")
    ref = parts[0]
    role = parts[1] if len(parts) > 1 and parts[1] else "base"
    weight = None
    if len(parts) > 2:
        try:
            weight = float(parts[2])
        except ValueError:
            raise ZooError(f"--parent {text!r}: weight {parts[2]!r} is not a number") from None
        if not math.isfinite(weight):
            raise ZooError(f"--parent {text!r}: weight {parts[2]!r} is not a finite number")
    return Parent(ref, role, weight)


@app.command()
def init() -> None:
    """Create the catalog database, or check an existing one (SQLite's quick integrity check).

    An existing database is used only if it is a weightzoo catalog; an empty file (0 bytes,
    or an SQLite database without tables) is made one, and `init` says so.
    """
    from ..catalog import Catalog
    from ..catalog.guard import classify_sqlite
    from ..catalog.location import resolve_url, sqlite_path
    from ..errors import CatalogError

    path = sqlite_path(resolve_url(catalog_target()))
    was_empty = path is not None and classify_sqlite(path).kind == "empty"
    cat = Catalog(catalog_target(), adopt_empty=True)
    problems = cat.integrity_problems()
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise CatalogError(f"catalog {cat.where} is damaged ({problems[0]}{more}); restore it from a backup")
    if was_empty:
        out.print(f"made the empty database {cat.where} a weightzoo catalog")
    out.print(f"catalog ready: {cat.where} ({cat.count()} models); store: {cat.store}")


@app.command()
def add(
    path: Path = typer.Argument(..., help="HF folder, .safetensors file, or .bin/.pt/.pth (converted)."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Catalog name [default: folder or file name]."),
    copy: bool = typer.Option(False, "--copy", help="Copy the files into the store instead of indexing in place."),
    tag: List[str] = typer.Option([], "--tag", "-t", help="Tag to attach (repeatable)."),
    parent: List[str] = typer.Option([], "--parent", "-p", help="Lineage parent as REF[:ROLE[:WEIGHT]], role defaults to 'base' (repeatable)."),
    as_json: bool = json_option("Print the entry as JSON."),
) -> None:
    """Register a checkpoint: hash its files, read its config, record it (new version if the name exists).

    Example: zoo add ./my-llama --name llama-base --tag base
    """
    from ..checkpoint import Checkpoint

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
        from ..catalog import views

        adapter = views.show(cat, e).get("adapter")
        if adapter:
            out.print(adapter_line(adapter))
    else:
        out.print(f"already catalogued as [bold]{e.ref}[/bold] (identical bytes); nothing added")


@app.command("ls")
def list_models(
    family: Optional[str] = typer.Option(None, "--family", "-f", help="Only this family (e.g. llama, vit)."),
    tag: Optional[str] = typer.Option(None, "--tag", "-t", help="Only models with this tag."),
    name: Optional[str] = typer.Option(None, "--name", help="Name pattern, '*' as wildcard."),
    as_json: bool = json_option("JSON array, one object per model (see README for the schema)."),
) -> None:
    """List catalogued models."""
    from ..catalog import views

    if as_json:
        sys.stdout.buffer.write(views.ls_json(catalog_target(), family, tag, name) + b"\n")
        return
    rows = views.ls(catalog_target(), family, tag, name)
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    wide = out.width >= 140  # the location only when there is room for it
    columns = ("ref", "id", "family", "params", "dtype", "size", "tags", "metrics") + (("location",) if wide else ())
    for col_name in columns:
        fixed = col_name in ("ref", "id", "family", "params", "dtype", "size")
        table.add_column(col_name, no_wrap=fixed, overflow="fold", min_width=12 if col_name == "metrics" else None)
    for r in rows:
        metrics = ", ".join(f"{k}={fmt_metric(v)}" for k, v in list(r["metrics"].items())[:2])
        cells = [r["ref"], str(r["id"]), r["family"] or "-", human_count(r["params"]), r["dtype"] or "-",
                 human_bytes(r["bytes"]), ",".join(r["tags"]), metrics]
        table.add_row(*cells, *([r["location"]] if wide else []))
    out.print(table if rows else "[dim]no models (add one with `zoo add PATH`, or try `zoo demo`)[/dim]")


@app.command()
def show(ref: str = typer.Argument(..., help="name, name@VERSION or id."),
         as_json: bool = json_option("Everything as one JSON object.")) -> None:
    """Show one model: metadata, files and digests, family shape, lineage, run."""
    from ..catalog import views

    info = views.show(catalog(create=False), ref)
    summary = info.pop("config_summary")  # `--json` keeps its documented keys
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
    if info.get("adapter"):
        t.add_row("[bold]adapter[/bold]", adapter_line(info["adapter"]))
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


def adapter_line(a: dict) -> str:
    """'LoRA adapter of BASE (rank 8, alpha 16, targets q_proj, v_proj)'."""
    kind = "LoRA" if a["kind"] == "LORA" else a["kind"]
    base = a["base_ref"] or (f"{a['base']} (not in the catalog)" if a["base"] else "an unnamed base")
    targets = a["targets"] if isinstance(a["targets"], str) else ", ".join(a["targets"] or []) or "-"
    bits = [f"rank {a['rank']}" + (" (varies by module)" if a["rank_pattern"] else ""),
            f"alpha {a['alpha']}" + (" (varies by module)" if a["alpha_pattern"] else ""), f"targets {targets}"]
    if a["rslora"]:
        bits.append("rsLoRA")
    if a["modules_to_save"]:
        bits.append(f"full {', '.join(a['modules_to_save'])}")
    return f"{kind} adapter of {base} ({', '.join(bits)})"


@app.command()
def tensors(ref: str = typer.Argument(..., help="Catalog reference, or a path to a checkpoint."),
            match: Optional[str] = typer.Option(None, "--match", "-m", help="Only names containing this text."),
            as_json: bool = json_option("JSON array of {name, shape, dtype, params, file}.")) -> None:
    """List a model's tensors (names, shapes, dtypes) from headers, without loading weights."""
    ckpt = _open_ref_or_path(ref)
    problem = ckpt.config_problem()
    if problem:  # the tensors are still readable: list them, and say what is broken
        typer.echo(f"warning: {problem}", err=True)
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
    from ..checkpoint import Checkpoint
    from ..errors import NotFoundError

    try:
        return catalog(create=False).open(ref)
    except NotFoundError:  # no such entry, or no catalog at all: a path still works
        if Path(ref).exists():
            return Checkpoint.open(ref)
        raise


@app.command()
def diff(a: str = typer.Argument(..., help="First model (reference or path)."),
         b: str = typer.Argument(..., help="Second model (reference or path)."),
         top: int = typer.Option(0, "--top", help="Only the N most changed tensors (0 = all)."),
         as_json: bool = json_option("JSON array of per-tensor results.")) -> None:
    """Per-tensor relative change ||B-A|| / ||A|| of two models with the same tensor names."""
    from ..catalog import views
    from ..console import item_progress

    ca, cb = _open_ref_or_path(a), _open_ref_or_path(b)
    with item_progress("comparing", len(ca.names())) as advance:
        rows = views.diff(ca, cb, top, labels=(a, b), progress=advance)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for c in ("tensor", "rel change", "max |Δ|", "note"):
        table.add_column(c)
    for r in rows:
        table.add_row(*views.diff_cells(r))
    out.print(table)


@app.command()
def lineage(ref: str = typer.Argument(..., help="Catalog reference."),
            fmt: str = typer.Option("tree", "--format", help="tree (terminal), dot (Graphviz text) or png."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="File for dot, png or --recipe (png default: NAME-vN-lineage.png)."),
            show_recipe: bool = typer.Option(False, "--recipe", help="Print the recipe instead: a `zoo build` pipeline "
                                             "(YAML) that re-runs every run of the model's ancestry.")) -> None:
    """Show a model's family tree: what it was made from and what was made from it."""
    from ..provenance import lineage_graph, recipe_yaml, render_tree, to_dot, to_png

    cat = catalog(create=False)
    entry = cat.get(ref)
    if show_recipe:
        text = recipe_yaml(cat, entry)
        if output:
            output.write_text(text)
            err.print(f"wrote {output}")
        else:
            out.print(text, end="", markup=False, highlight=False, emoji=False, soft_wrap=True)
        return
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


@app.command()
def verify(ref: Optional[str] = typer.Argument(None, help="One model; all models if omitted."),
           as_json: bool = json_option("JSON array of {ref, ok, problems}.")) -> None:
    """Check the catalog database (SQLite's quick integrity check), re-hash files and report
    any that are missing or changed, and (for the whole catalog) store folders no entry
    points at and temporaries left by killed processes. Exit 1 if anything is wrong."""
    cat = catalog(create=False)
    damage = cat.integrity_problems()
    if damage:  # the rows themselves cannot be trusted: say so, check nothing else
        if as_json:
            print_json([{"ref": None, "ok": False, "problems": [f"catalog database damaged: {p}" for p in damage]}])
        else:
            out.print(f"[red]FAILED[/red]  catalog {cat.where} is damaged: {damage[0]} (restore it from a backup)")
        raise typer.Exit(1)
    entries = [cat.get(ref)] if ref else None
    total = sum(e.bytes for e in entries) if entries else sum(r["bytes"] for r in cat.ls())
    with byte_progress("verifying", total) as advance:
        results = cat.verify(ref, progress=advance)
    bad = [r for r in results if not r.ok]
    leftovers = cat.store_report() if ref is None else None
    from rich.markup import escape

    if as_json:
        rows = [{"ref": r.ref, "ok": r.ok, "problems": r.problems} for r in results]
        if leftovers is not None and not leftovers.clean:
            rows.append({"ref": None, "ok": False, "problems": leftovers.lines()})
        print_json(rows)
    else:
        for r in results:
            out.print(f"[green]ok[/green]      {r.ref}" if r.ok else f"[red]FAILED[/red]  {r.ref}: " + "; ".join(r.problems))
        for line in leftovers.lines() if leftovers is not None else []:
            out.print(f"[red]STORE[/red]   {escape(line)}", highlight=False)
    if bad or (leftovers is not None and not leftovers.clean):
        raise typer.Exit(1)


@app.command()
def tag(ref: str = typer.Argument(...), tags: List[str] = typer.Argument(..., help="Tags to add (or remove with --remove)."),
        remove: bool = typer.Option(False, "--remove", "-r", help="Remove the tags instead.")) -> None:
    """Add or remove tags on a model."""
    now = catalog(create=False).tag(ref, remove=tags) if remove else catalog(create=False).tag(ref, add=tags)
    out.print(f"{catalog().get(ref).ref}: tags = {', '.join(now) or '-'}")


@app.command()
def metric(ref: str = typer.Argument(...),
           values: List[str] = typer.Argument(..., help="KEY=VALUE pairs; values are read as YAML/JSON (numbers, lists) when they can be.")) -> None:
    """Record free-form metrics on a model (e.g. zoo metric m acc=0.93 task=digits)."""
    now = catalog(create=False).set_metrics(ref, parse_assignments(values, "metric"))
    out.print(f"{catalog().get(ref).ref}: metrics = {json.dumps(now)}")


@app.command()
def rm(ref: str = typer.Argument(...),
       force: bool = typer.Option(False, "--force", help="Remove even if other models descend from it (cuts their lineage)."),
       keep_files: bool = typer.Option(False, "--keep-files", help="Keep store files of copied/produced models.")) -> None:
    """Remove a model from the catalog. Files indexed in place are never deleted."""
    e = catalog(create=False).remove(ref, force=force, keep_files=keep_files)
    out.print(f"removed {e.ref}" + (" and its store files" if e.owned and not keep_files else ""))


@app.command()
def export(ref: str = typer.Argument(...), target: Path = typer.Argument(..., help="New folder to create.")) -> None:
    """Copy a model's files to a new folder (digests checked while copying)."""
    cat = catalog(create=False)
    e = cat.get(ref)
    with byte_progress("exporting", e.bytes) as advance:
        path = cat.export(e, target, progress=advance)
    out.print(f"exported {e.ref} to {path}")


@app.command()
def runs(limit: int = typer.Option(20, "--limit", help="How many recent runs."),
         as_json: bool = json_option("JSON array of runs.")) -> None:
    """Recent operator runs: what ran, with which params, producing what."""
    from ..catalog.records import run_row

    from ..catalog.guard import NoCatalogError

    try:
        rows = [run_row(r) for r in catalog(create=False).runs(limit)]
    except NoCatalogError:  # nothing has run yet, and reading creates nothing
        rows = []
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
