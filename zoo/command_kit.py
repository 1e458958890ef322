"""What every command module shares, whether it lives in `zoo.cli` or in an operator
package's plugin: the catalog the user chose on the root command, and the option
vocabulary (`--json`, `--out`, `--tag`, `--seed`, `--device`, `--no-cache`) defined once
so every command spells and explains them the same way.

Core on purpose: operator packages add commands without importing the front end.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from .catalog import Catalog

_state: dict[str, Any] = {"target": None, "open": None}

DEVICE_HELP = "Where the tensor math runs: cpu, cuda (every visible GPU, tensors dealt out), cuda:N, auto, or a list."


def choose_catalog(target: str | None) -> None:
    """Called by the root command with --catalog / $ZOO_CATALOG (None: ./catalog.db)."""
    _state["target"] = target
    _state["open"] = None


def catalog(create: bool = True) -> "Catalog":
    """The catalog the user chose, opened on first use. Commands that only read pass
    `create=False`: where there is no catalog they say so, and create none."""
    from .catalog import Catalog

    if not isinstance(_state["open"], Catalog):
        _state["open"] = Catalog(_state["target"], create=create)
    return _state["open"]


def catalog_target() -> str | None:
    """What the user named with --catalog / $ZOO_CATALOG (None: the default)."""
    return _state["target"]


# --- the shared options: each a factory so a command can say what the flag means for it ---
def json_option(help: str = "Print the result as JSON.") -> Any:
    return typer.Option(False, "--json", help=help)


HASH_RULE = "HASH: the first 8 hex digits of the run's cache key, so the same run gets the same name"


def out_option(help: str = "Catalog name of the result.", default: str = "OPERATOR-HASH") -> Any:
    """`--out NAME`. Without it the runner names the output after the operator (dots as
    dashes) and the run's cache key, e.g. merge-ties-3f2a9c1b: `default` says so in the
    help, with the rule for HASH, unless `help` already states its own `[default: ...]`."""
    if "[default:" not in help:
        rule = f"; {HASH_RULE}" if "HASH" in default else ""
        help = f"{help.rstrip().rstrip('.')} [default: {default}{rule}]."
    return typer.Option(None, "--out", "-o", help=help, callback=_checked_name)


def _checked_name(value: str | None) -> str | None:
    """--out names a catalog entry: an empty or invalid name is refused before any work."""
    if value is not None:
        from .catalog.catalog import check_name
        from .errors import ZooError

        try:
            check_name(value)
        except ZooError as e:
            raise ZooError(f"--out: {e}") from None
    return value


def tag_option(help: str = "Tag for the result (repeatable).") -> Any:
    return typer.Option([], "--tag", "-t", help=help)


def seed_option(help: str = "Random seed.", default: int = 0) -> Any:
    return typer.Option(default, "--seed", help=help)


def device_option(help: str = DEVICE_HELP) -> Any:
    return typer.Option("cpu", "--device", help=help)


def no_cache_option(help: str = "Run again even if the same run was recorded.") -> Any:
    return typer.Option(False, "--no-cache", help=help)


def fmt_metric(v: Any) -> str:
    """A metric value as commands print it."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def metrics_line(metrics: dict | None) -> str:
    return ", ".join(f"{k}={fmt_metric(v)}" for k, v in (metrics or {}).items())
