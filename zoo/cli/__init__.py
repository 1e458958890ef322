"""The `zoo` command: the root Typer app, its command groups, and plugins' commands.

The catalog commands live in this package (one module per group of commands); operator
packages and the TUI add theirs through the `weightzoo.plugins` entry point
(`zoo.plugins`), so this front end names no operator package.

Every error a user can cause prints one line (`error: ...`) and exits non-zero;
`--debug` (or ZOO_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from functools import lru_cache
from typing import Any, Optional

import typer
import typer.main

from ..argv_scan import command_name
from ..command_kit import choose_catalog
from ..errors import ZooError
from ..plugins import broken, install_commands
from .plain_values import plain_values_first
from .usage import ABORTS, EXITS, NO_ARGS_HELP, USAGE_ERRORS, non_utf8_argument, usage_line

# The core's command groups (modules of this package), in the order `zoo --help` lists them,
# with the commands each one defines. A command of the core loads its own group alone:
# `zoo ls` imports no other command module and no plugin (tests/zoo/test_fast_reads.py keeps
# this table true; a command missing here still works, with everything loaded).
CORE_GROUPS: dict[str, tuple[str, ...]] = {
    "catalog": ("init", "add", "ls", "show", "tensors", "diff", "lineage", "verify", "tag", "metric", "rm",
                "export", "runs"),
    "models": ("demo", "new", "train", "eval"),
    "hub": ("push", "pull"),
    "build": ("build",),
    "reproduce": ("reproduce",),
    "maintenance": ("gc",),
}
_GROUP_OF = {name: group for group, names in CORE_GROUPS.items() for name in names}


def _new_root() -> typer.Typer:
    """A root app, before its commands are added."""
    return typer.Typer(
        name="zoo",
        help="weightzoo: a catalog of model checkpoints with provenance, and operators that build new models from them."
             "\n\nExample: zoo --catalog ./my-zoo.db ls --family llama",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"weightzoo {__version__}")
        raise typer.Exit()


def _root(
    catalog_: Optional[str] = typer.Option(None, "--catalog", "-C", envvar="ZOO_CATALOG",
                                           help="Catalog database: a path or SQLAlchemy URL [default: ./catalog.db]."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    choose_catalog(catalog_)


@lru_cache(maxsize=None)
def app_for(group: str | None = None) -> typer.Typer:
    """The root app with one core command group (`"catalog"` for `zoo ls`), or, for None,
    with every command: the core's groups, then every plugin's (merge, expand, stitch,
    learngene, generate, tui, ...)."""
    root = _new_root()
    root.callback()(_root)
    for name in (group,) if group else CORE_GROUPS:
        root.add_typer(importlib.import_module(f"{__name__}.{name}").app)
    if group is None:
        install_commands(root)
    return root


def command(argv: list[str] | None = None) -> Any:
    """The `zoo` command tree as click runs it: every command, or, for `argv`, only what its
    command needs (a core command: its own group; anything else, a typo or `zoo --help`:
    every command). Its help is fixed for every command (`help.polish`), and values that
    need no conversion skip pydantic (`plain_values`)."""
    from .help import polish

    name = command_name(argv) if argv is not None else None
    group = _GROUP_OF.get(name) if name else None
    tree = typer.main.get_command(app_for(group))
    if group is not None and name not in getattr(tree, "commands", {}):
        tree = typer.main.get_command(app_for(None))  # CORE_GROUPS is behind its modules: load everything
    return plain_values_first(polish(tree))


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole root app, built on first use (`zoo.cli.app`)
        return app_for(None)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("ZOO_DEBUG") == "1"


class Terminated(BaseException):
    """SIGTERM or SIGINT, raised in the main thread so the cleanup paths of an error run
    (temporary folders removed, the catalog transaction rolled back). Not a
    KeyboardInterrupt: Typer would turn that into a silent exit 130."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_on_signal(signum: int, _frame) -> None:  # noqa: ANN001
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the cleanup short
    raise Terminated(signum)


def _catch_signals() -> dict[int, object]:
    """Install the handler for SIGTERM and SIGINT (main thread only; SIGINT only if not
    ignored, as under `nohup`); the handlers that were there, to put back."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        if sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, _raise_on_signal)
    return previous


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn user errors into one line and an exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = _catch_signals()
    try:
        tree = command(argv)
        for problem in broken():  # where plugins were loaded, a broken one is a bug in that package: say so, run without it
            typer.echo(f"warning: {problem}", err=True)
        rc = tree(args=argv, prog_name="zoo", standalone_mode=False)
        return rc if isinstance(rc, int) else 0  # click returns Exit codes in this mode
    except Terminated as e:  # everything was cleaned up on the way here
        typer.echo(f"interrupted ({signal.Signals(e.signum).name}); nothing was half-written", err=True)
        return 128 + e.signum
    except ZooError as e:
        if _wants_debug(argv):
            raise
        typer.echo(f"error: {e}", err=True)
        return e.exit_code
    except EXITS as e:
        return e.exit_code
    except NO_ARGS_HELP as e:  # `zoo` alone: the help is already printed
        return e.exit_code
    except USAGE_ERRORS as e:  # option or command typos, bad values: one line, with "did you mean"
        typer.echo(usage_line(e, argv, tree), err=True)
        return e.exit_code
    except (ABORTS, KeyboardInterrupt) as e:
        typer.echo("interrupted; nothing was half-written", err=True)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug; still one line unless --debug
        if _wants_debug(argv):
            raise
        message = non_utf8_argument(e, argv)  # a name, tag or key typed as bytes that are not UTF-8
        if message is not None:
            typer.echo(f"error: {message}", err=True)
            return 1
        first = (str(e).strip().splitlines() or [""])[0]
        typer.echo(f"error: internal error {type(e).__name__}: {first} (rerun with --debug for details)", err=True)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
