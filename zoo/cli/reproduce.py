"""`zoo reproduce REF`: replay the recorded recipe of an entry and compare (see zoo/reproduce.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..command_kit import catalog, device_option, json_option
from ..console import err, out, print_json

app = typer.Typer()


@app.command()
def reproduce(
    ref: str = typer.Argument(..., help="Catalog reference of the model to reproduce."),
    recursive: bool = typer.Option(False, "--recursive", "-r",
                                   help="Replay its whole ancestry, from the catalog's roots (checked by digest)."),
    any_version: bool = typer.Option(False, "--any-version",
                                     help="Replay with this installation's operator even when its version differs "
                                          "from the recorded one (cards still state the recorded version)."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Where the temporary replay is written "
                                            "[default: the system's temporary folder]."),
    device: str = device_option(),
    as_json: bool = json_option("JSON array, one item per entry checked: {ref, status, digest, reproduced, ...}."),
) -> None:
    """Prove an entry's recipe: re-run the run that made it (operator, version, params) on
    its recorded inputs, re-hashed first, into a temporary folder that is never registered,
    and compare with the catalogued files. Merges, expansions and exports must reproduce bit
    for bit; seeded training reports its largest difference per tensor. Exit 1 when a
    deterministic step differs (the differing tensors are listed).

    Example: zoo reproduce my-merge --recursive"""
    from ..reproduce import reproduce as replay

    checks = replay(catalog(create=False), ref, recursive=recursive, any_version=any_version, device=device,
                    work_dir=work_dir, log=lambda msg: err.print(msg, highlight=False, markup=False))
    if as_json:
        print_json([c.row() for c in checks])
    else:
        for c in checks:
            for line in c.lines():
                out.print(line, highlight=False, markup=False, soft_wrap=True)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
