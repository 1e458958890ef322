"""The `zoo` command: browse and manage the catalog; operators plug in as sub-commands.

Every error a user can cause prints one line (`error: ...`) and exits non-zero;
`--debug` (or ZOO_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

import click
import typer

from .errors import ZooError

app = typer.Typer(
    name="zoo",
    help="weightzoo: a catalog of model checkpoints with provenance, and operators that build new models from them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state: dict = {"catalog": None}


def catalog():
    """The catalog chosen by --catalog / $ZOO_CATALOG / ./catalog.db (opened once)."""
    from .catalog import Catalog

    if not isinstance(_state.get("open"), Catalog):
        _state["open"] = Catalog(_state["catalog"])
    return _state["open"]


def catalog_target() -> str | None:
    """What the user named with --catalog / $ZOO_CATALOG (None: the default)."""
    return _state["catalog"]


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"weightzoo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    catalog_: Optional[str] = typer.Option(None, "--catalog", "-C", envvar="ZOO_CATALOG",
                                           help="Catalog database: a path or SQLAlchemy URL [default: ./catalog.db]."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _state["catalog"] = catalog_
    _state.pop("open", None)


# --- catalog commands are defined in zoo.commands; operator packages add their own ---
from . import commands  # noqa: E402,F401  (registers the core commands on `app`)
from . import commands_stitch  # noqa: E402,F401  (zoo stitch / zoo learngene)
from . import commands_population  # noqa: E402,F401  (zoo population)
from . import commands_generate  # noqa: E402,F401  (zoo generate)
from . import commands_tui  # noqa: E402,F401  (zoo tui)
from . import commands_hub  # noqa: E402,F401  (zoo push / zoo pull)
from . import commands_build  # noqa: E402,F401  (zoo build)


def _wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("ZOO_DEBUG") == "1"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn user errors into one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = app(args=argv, prog_name="zoo", standalone_mode=False)
        return rc if isinstance(rc, int) else 0  # click returns Exit codes in this mode
    except ZooError as e:
        if _wants_debug(argv):
            raise
        typer.echo(f"error: {e}", err=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        typer.echo("interrupted; nothing was half-written", err=True)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug; still one line unless --debug
        if _wants_debug(argv):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        typer.echo(f"error: internal error {type(e).__name__}: {first} (rerun with --debug for details)", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
