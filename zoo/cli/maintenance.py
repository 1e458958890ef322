"""Store maintenance: `zoo gc` removes what no catalog entry accounts for."""
from __future__ import annotations

import typer

from ..command_kit import catalog, json_option
from ..console import out, print_json

app = typer.Typer()


@app.command()
def gc(dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be removed."),
       as_json: bool = json_option("JSON array of the removed (or, with --dry-run, removable) paths.")) -> None:
    """Remove store folders no catalog entry points at (left by a process killed between
    moving its output into place and recording it) and temporaries of processes that are gone.

    `zoo verify` reports the same things. One store per catalog: a store shared by two
    catalogs would look like orphans to each.

    Example: zoo gc --dry-run
    """
    from rich.markup import escape

    found = catalog(create=False).collect_garbage(dry_run=dry_run)
    if as_json:
        print_json([str(p) for p in found])
        return
    verb = "would remove" if dry_run else "removed"
    for p in found:
        out.print(f"{verb} {escape(str(p))}", highlight=False)
    out.print(f"{verb} {len(found)} item(s)" if found else "nothing to remove: the store holds only catalogued models")
