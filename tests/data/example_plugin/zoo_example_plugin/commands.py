"""`zoo example scale REF --factor F`: the plugin's command group."""
from __future__ import annotations

from typing import Optional

import typer

from zoo.command_kit import catalog, out_option

app = typer.Typer(help="Example plugin: scale a model's weights.", no_args_is_help=True)


def install(root: typer.Typer) -> None:
    root.add_typer(app, name="example")


@app.command("scale")
def scale(ref: str = typer.Argument(..., help="The model to scale."),
          factor: float = typer.Option(2.0, "--factor", help="The factor."),
          out: Optional[str] = out_option()) -> None:
    """Multiply every tensor of a model by a factor."""
    from zoo.catalog import Parent
    from zoo.runner import run_operator

    cat = catalog()
    result = run_operator(cat, "example.scale", [Parent(cat.get(ref).id, "source")], {"factor": factor}, out)
    typer.echo(f"scaled into {result.entry.ref}")
