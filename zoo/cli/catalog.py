"""The catalog commands: init, add, ls, show, tensors, diff, lineage, verify, tag, metric,
rm, export, runs. They read through the catalog's read model (`zoo.catalog.views`)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..command_kit import catalog, catalog_target, json_option
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

    Example: zoo --catalog ./my-zoo.db init
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
    from ..hashing import BackgroundHashes, take_early

    parents = [_parse_parent(p) for p in parent]
    try:
        ckpt = Checkpoint.open(path)
    except ZooError:
        catalog()  # (a catalog's own problem is still said first, and the catalog made, as always)
        raise
    total = sum((ckpt.root / f).stat().st_size for f in ckpt.files())
    with byte_progress("copying" if copy else "hashing", total) as advance:
        # indexed in place: the files hash while the catalog opens (most of the start-up), or
        # already do (the `zoo` script starts them before its imports: zoo.entry)
        early = None
        if not (copy or ckpt.needs_conversion):
            paths = [ckpt.root / f for f in ckpt.files()]
            early = take_early(paths)
            if early is None:
                early = BackgroundHashes(paths, advance)
            else:
                early.report_to(advance)
        try:
            cat = catalog()
            result = cat.add(path, name, copy=copy, tags=tag, parents=parents, progress=advance, hashes=early)
        finally:
            if early is not None:
                early.cancel()
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
    family: Optional[str] = typer.Option(None, "--family", "-f", help="Only this family (e.g. llama, vit) [default: all families]."),
    tag: Optional[str] = typer.Option(None, "--tag", "-t", help="Only models with this tag [default: any tags]."),
    name: Optional[str] = typer.Option(None, "--name", help="Name pattern, '*' as wildcard [default: every name]."),
    limit: Optional[int] = typer.Option(None, "--limit", help="At most this many models (a page) [default: all]."),
    offset: int = typer.Option(0, "--offset", help="Skip this many models first (with --limit: the next page)."),
    as_json: bool = json_option("JSON array, one object per model (see README for the schema)."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Comma-separated columns to show, from "
                                          "ref, id, name, version, family, architecture, params, dtype, size, tags, "
                                          "metrics, location, created [default: ref to metrics, plus location when "
                                          "piped or on a terminal 140+ columns wide]."),
) -> None:
    """List catalogued models: a table fitted to the terminal (a cut cell ends with "…"), or,
    piped, tab-separated lines under a header with every value whole.

    Example: zoo ls --family llama --columns id,name,size"""
    from ..catalog import views
    from .listing import chosen_columns, print_listing

    shown = chosen_columns(columns)
    if as_json and shown is not None:
        raise ZooError("--columns chooses table columns; --json always prints every field (drop one of them)")
    if as_json:
        sys.stdout.buffer.write(views.ls_json(catalog_target(), family, tag, name, limit=limit, offset=offset) + b"\n")
        return
    rows = views.ls(catalog_target(), family, tag, name, limit=limit, offset=offset)
    if not rows:
        out.print("[dim]no models (add one with `zoo add PATH`, or try `zoo demo`)[/dim]")
        return
    print_listing(rows, shown)


@app.command()
def show(ref: str = typer.Argument(..., help="name, name@VERSION or id."),
         as_json: bool = json_option("Everything as one JSON object.")) -> None:
    """Show one model: metadata, files and digests, family shape, lineage, run.

    Example: zoo show llama-base@1"""
    from ..catalog import views

    info = views.show(catalog_target(), ref)  # plain SQL on a SQLite catalog; a missing one is refused
    summary = info.pop("config_summary")  # `--json` keeps its documented keys
    if as_json:
        print_json(info)
        return
    from ..tables import Column, print_table

    t: list[tuple[str, str]] = []
    for key in ("ref", "id", "family", "architecture", "params", "dtype", "bytes", "location", "digest", "tags", "metrics", "created"):
        val = info[key]
        if key == "params":
            val = f"{val:,} ({human_count(val)})"
        elif key == "bytes":
            val = human_bytes(val)
        elif isinstance(val, (list, dict)):
            val = json.dumps(val) if val else "-"
        t.append((key, str(val if val is not None else "-")))
    if info.get("adapter"):
        t.append(("adapter", adapter_line(info["adapter"])))
    if summary:
        t.append(("config", ", ".join(f"{k}={v}" for k, v in summary.items())))
    if info.get("widths"):
        w = info["widths"]
        t.append(("shape", f"{w['layers']} layers, hidden {w['hidden']}, {w['heads']} heads "
                  f"({w['kv_heads']} kv) x {w['head_dim']}, mlp {w['intermediate']}, norm {w['norm']}"))
    for p in info["parents"]:
        weight = "" if p["weight"] is None else f", w={p['weight']:g}"
        t.append(("parent", f"{p['parent']} ({p['role']}{weight})"))
    for c in info["children"]:
        t.append(("child", f"{c['child']} ({c['role']})"))
    if info["run"]:
        r = info["run"]
        t.append(("made by", f"run {r['id']}: {r['operator']} {json.dumps(r['params'])}"))
    print_table([Column("field", fixed=True, style="bold"), Column("value", wrap=True)], t, header=False)
    print_table([Column("file", min_width=20), Column("size", fixed=True, justify="right"), Column("sha256")],
                [(f["path"], human_bytes(f["size"]), f["sha256"]) for f in info["files"]])


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
            match: Optional[str] = typer.Option(None, "--match", "-m", help="Only names containing this text [default: every tensor]."),
            as_json: bool = json_option("JSON array of {name, shape, dtype, params, file}.")) -> None:
    """List a model's tensors (names, shapes, dtypes) from headers, without loading weights.

    Example: zoo tensors llama-base --match self_attn"""
    ckpt = _open_ref_or_path(ref)
    problem = ckpt.config_problem()
    if problem:  # the tensors are still readable: list them, and say what is broken
        typer.echo(f"warning: {problem}", err=True)
    rows = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "params": t.numel, "file": t.file}
            for t in ckpt.tensors.values() if not match or match in t.name]
    if as_json:
        print_json(rows)
        return
    from ..tables import Column, print_table

    print_table([Column("name", min_width=24), Column("shape", fixed=True), Column("dtype", fixed=True),
                 Column("params", fixed=True, justify="right")],
                [(r["name"], "x".join(map(str, r["shape"])) or "scalar", r["dtype"], f"{r['params']:,}") for r in rows])
    summary = f"{len(rows)} tensors, {sum(r['params'] for r in rows):,} parameters"
    if out.is_terminal:
        out.print(f"[dim]{summary}[/dim]")
    else:  # piped: stdout holds the rows alone
        err.print(summary, highlight=False)


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
    """Per-tensor relative change ||B-A|| / ||A|| of two models with the same tensor names.

    Example: zoo diff llama-base my-finetune --top 10"""
    from ..catalog import views
    from ..console import item_progress

    ca, cb = _open_ref_or_path(a), _open_ref_or_path(b)
    with item_progress("comparing", len(ca.names())) as advance:
        rows = views.diff(ca, cb, top, labels=(a, b), progress=advance)
    if as_json:
        print_json(rows)
        return
    from ..tables import Column, print_table

    print_table([Column("tensor", min_width=24), Column("rel change", fixed=True, justify="right"),
                 Column("max |Δ|", fixed=True, justify="right"), Column("note")], [views.diff_cells(r) for r in rows])


@app.command()
def lineage(ref: str = typer.Argument(..., help="Catalog reference."),
            fmt: str = typer.Option("tree", "--format", help="tree (terminal), dot (Graphviz text) or png."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="File for dot, png or --recipe [default: dot and --recipe print to stdout; png: zoo-lineage-NAME-vN.png in the system's temporary folder, the path printed]."),
            show_recipe: bool = typer.Option(False, "--recipe", help="Print the recipe instead: a `zoo build` pipeline "
                                             "(YAML) that re-runs every run of the model's ancestry.")) -> None:
    """Show a model's family tree: what it was made from and what was made from it.

    Example: zoo lineage my-merge --format png -o my-merge.png"""
    if fmt == "dot" and not show_recipe:  # the read model written as text: plain SQL, no ORM, no networkx
        from ..catalog import views
        from ..lineage_dot import lineage_dot

        text = lineage_dot(views.lineage(catalog_target(), ref))
        if output:
            output.write_text(text)
            err.print(f"wrote {output}", markup=False, highlight=False)
        else:
            sys.stdout.write(text)
        return
    from ..provenance import lineage_graph, recipe_yaml, render_tree, to_png

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
    elif fmt == "png":
        from ..lineage_picture import default_png_path

        path = to_png(g, output or default_png_path(entry.name, entry.version))
        out.print(f"wrote {path}", markup=False, highlight=False)
    else:
        raise ZooError(f"unknown --format {fmt!r} (use tree, dot or png)")


@app.command()
def verify(ref: Optional[str] = typer.Argument(None, help="One model; all models if omitted."),
           as_json: bool = json_option("JSON array of {ref, ok, problems}.")) -> None:
    """Check the catalog database (SQLite's quick integrity check), re-hash files and report
    any that are missing or changed, and (for the whole catalog) store folders no entry
    points at and temporaries left by killed processes. Exit 1 if anything is wrong.

    Example: zoo verify llama-base"""
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
    """Add or remove tags on a model.

    Example: zoo tag my-merge keep candidate"""
    now = catalog(create=False).tag(ref, remove=tags) if remove else catalog(create=False).tag(ref, add=tags)
    out.print(f"{catalog().get(ref).ref}: tags = {', '.join(now) or '-'}")


@app.command()
def metric(ref: str = typer.Argument(...),
           values: List[str] = typer.Argument(..., help="KEY=VALUE pairs; values are read as YAML/JSON (numbers, lists) when they can be.")) -> None:
    """Record free-form metrics on a model.

    Example: zoo metric my-merge acc=0.93 task=digits"""
    now = catalog(create=False).set_metrics(ref, parse_assignments(values, "metric"))
    out.print(f"{catalog().get(ref).ref}: metrics = {json.dumps(now)}")


@app.command()
def rm(ref: str = typer.Argument(...),
       force: bool = typer.Option(False, "--force", help="Remove even if other models descend from it (cuts their lineage)."),
       keep_files: bool = typer.Option(False, "--keep-files", help="Keep store files of copied/produced models.")) -> None:
    """Remove a model from the catalog. Files indexed in place are never deleted.

    Example: zoo rm my-merge@2"""
    e = catalog(create=False).remove(ref, force=force, keep_files=keep_files)
    out.print(f"removed {e.ref}" + (" and its store files" if e.owned and not keep_files else ""))


@app.command()
def export(ref: str = typer.Argument(...), target: Path = typer.Argument(..., help="New folder to create.")) -> None:
    """Copy a model's files to a new folder (digests checked while copying).

    Example: zoo export my-merge ./my-merge-hf"""
    cat = catalog(create=False)
    e = cat.get(ref)
    with byte_progress("exporting", e.bytes) as advance:
        path = cat.export(e, target, progress=advance)
    out.print(f"exported {e.ref} to {path}")


@app.command()
def runs(limit: int = typer.Option(20, "--limit", help="How many recent runs."),
         as_json: bool = json_option("JSON array of runs.")) -> None:
    """Recent operator runs: what ran, with which params, producing what.

    Example: zoo runs --limit 5"""
    from ..catalog.records import run_row

    from ..catalog.guard import NoCatalogError

    try:
        rows = [run_row(r) for r in catalog(create=False).runs(limit)]
    except NoCatalogError:  # nothing has run yet, and reading creates nothing
        rows = []
    if as_json:
        print_json(rows)
        return
    from ..tables import Column, print_table

    print_table([Column("id", fixed=True, justify="right"), Column("operator", min_width=12), Column("inputs"),
                 Column("outputs"), Column("seconds", fixed=True, justify="right"), Column("params")],
                [(str(r["id"]), r["operator"], ", ".join(i.get("ref", "?") for i in r["inputs"]),
                  ", ".join(o["ref"] for o in r["outputs"]), f"{r['seconds']:.2f}" if r["seconds"] else "-",
                  json.dumps(r["params"])) for r in rows])
