"""Command-line usage mistakes (unknown option or command, bad or missing value) as one
line, `error: ...`, with a "did you mean" where a close name exists.

Typer 0.2x vendors click as `typer._click` (older Typer raises click's own exceptions):
catching the wrong copy is what turned typos into "internal error NoSuchOption".
"""
from __future__ import annotations

import re
from typing import Any

import typer

from ..errors import did_you_mean

try:  # Typer >= 0.20 ships its own copy of click and raises its exceptions
    from typer._click import exceptions as _click_exceptions  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - older Typer runs on click itself
    from click import exceptions as _click_exceptions  # type: ignore[import-not-found,no-redef]


USAGE_ERRORS = _click_exceptions.ClickException  # UsageError, NoSuchOption, BadParameter, ...
EXITS = typer.Exit
ABORTS = typer.Abort


class _Never(Exception):
    """Stands in for NoArgsIsHelpError on click versions without it."""


NO_ARGS_HELP = getattr(_click_exceptions, "NoArgsIsHelpError", _Never)  # help already printed: no mistake


def _option_names(command: Any) -> list[str]:
    names: list[str] = []
    for param in getattr(command, "params", []):
        if getattr(param, "param_type_name", "") == "option":
            names += [*param.opts, *param.secondary_opts]
    return names  # not --help: a typo is almost never meant as a request for help


def _resolve(root: Any, argv: list[str]) -> tuple[Any, str]:
    """The (sub)command that argv names, and its path (`zoo merge`), found word by word."""
    command, path = root, ["zoo"]
    for word in argv:
        sub = getattr(command, "commands", {}).get(word) if not word.startswith("-") else None
        if sub is not None:
            command, path = sub, [*path, word]
    return command, " ".join(path)


def usage_line(e: BaseException, argv: list[str], root: Any) -> str:
    """One line for a click usage error: what is wrong, a close name if any, where help is."""
    ctx = getattr(e, "ctx", None)
    command, path = (ctx.command, ctx.command_path) if ctx is not None else _resolve(root, argv)
    message = " ".join(e.format_message().split()) if hasattr(e, "format_message") else str(e)
    help_hint = f"see `{path} --help`"
    option = getattr(e, "option_name", None)
    if type(e).__name__ == "NoSuchOption" and option:
        return f"error: no such option {option} for `{path}`{did_you_mean(option, _option_names(command))}; {help_hint}"
    unknown = re.match(r"No such command '(.+?)'", message)
    if unknown:
        names = list(getattr(command, "commands", {}))
        return f"error: no such command {unknown[1]!r}{did_you_mean(unknown[1], names)}; {help_hint}"
    if message[:1].isupper() and not message[1:2].isupper():  # "Missing argument" -> "missing argument"
        message = message[0].lower() + message[1:]
    return f"error: {message.rstrip('.')}; {help_hint}"


def non_utf8_argument(e: BaseException, argv: list[str]) -> str | None:
    """The message for an error caused by a command-line argument that is not valid UTF-8
    (the shell passes raw bytes; Python keeps them as surrogates, which neither the catalog
    database nor JSON can hold), or None when `e` is something else."""
    if "surrogates not allowed" not in str(e):
        return None
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return f"argument '{shown}' is not valid UTF-8; names, tags and keys must be UTF-8 text (retype it)"
    return None
