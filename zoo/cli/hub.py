"""`zoo push` and `zoo pull`: the Hugging Face Hub, with provenance and verified checksums."""
from __future__ import annotations

from typing import Optional

import typer

from ..command_kit import catalog, json_option
from ..console import byte_progress, human_bytes, out, print_json

app = typer.Typer()


@app.command()
def push(
    ref: str = typer.Argument(..., help="The model to push (catalog reference)."),
    repo_id: str = typer.Argument(..., help="Hub repository, e.g. my-org/my-merge (created if missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch to push to [default: main]."),
    message: Optional[str] = typer.Option(None, "--message", "-m", help="Commit message [default: weightzoo: REF]."),
    as_json: bool = json_option("Print the result as JSON."),
) -> None:
    """Upload a model's files and a model card carrying its lineage and recipe
    (token: HF_TOKEN or `huggingface-cli login`; endpoint: HF_ENDPOINT).

    Example: zoo push my-merge my-org/my-merge --private"""
    from ..hub import push as do_push

    r = do_push(catalog(), ref, repo_id, private=private, revision=revision, message=message)
    if as_json:
        print_json({"repo_id": r.repo_id, "commit": r.commit, "url": r.url, "files": r.files})
    else:
        out.print(f"pushed {ref} to [bold]{r.repo_id}[/bold] @ {r.commit[:12]} ({r.files} files)")


@app.command()
def pull(
    spec: str = typer.Argument(..., help="REPO_ID or REPO_ID@REVISION (branch, tag or commit)."),
    name: Optional[str] = typer.Option(None, "--name", help="Catalog name [default: the repo's name]."),
    as_json: bool = json_option("Print the entry as JSON."),
) -> None:
    """Download a Hub model (resumable), check every file against the Hub's sha256, and
    register it as hub:REPO@COMMIT with the lineage its card records.

    Example: zoo pull my-org/my-merge@main --name my-merge"""
    from ..hub import pull as do_pull

    cat = catalog()
    with byte_progress("downloading") as advance:
        r = do_pull(cat, spec, name=name, progress=advance)
    if as_json:
        print_json({**cat.show(r.entry), "created": r.created})
        return
    verb = "pulled" if r.created else "already in the catalog:"
    out.print(f"{verb} [bold]{r.entry.ref}[/bold] from {r.entry.location}  ({human_bytes(r.entry.bytes)})")
