"""Command-line values that need no conversion skip pydantic.

Typer (0.2x) converts every parameter's value through a pydantic `TypeAdapter`, built on
first use even for an option left at `None`, so every `zoo` command paid for importing
pydantic (about 70 ms, a quarter of `zoo ls --json` on 100,000 models). For the plain cases
the answer is known without it: `None` stays `None` (or `()` for a repeatable option), a
text value of a text parameter is itself, and digits given to an integer parameter are that
integer, and a path parameter without checks (the default: no `exists`, `resolve_path`,
...) takes the text as a `Path`. Those are answered here; every other value (paths, floats, choices, lists,
ranges, custom parsers) goes to Typer's own conversion, built when first needed, so
messages and checks stay Typer's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

_UNSET = object()
# a path parameter's settings when it asks for no checks (Typer's defaults)
_UNCHECKED_PATH = {"exists": False, "file_okay": True, "dir_okay": True, "writable": False, "readable": True,
                   "resolve_path": False, "allow_dash": False, "path_type": None}


class _PlainFirst:
    """Typer's runtime-parameter protocol (`coerce(value, param, ctx)`): plain values here,
    the rest through Typer's own runtime parameter for `param`."""

    __slots__ = ("_typer",)

    def __init__(self) -> None:
        self._typer: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multiple = param.multiple or param.nargs == -1
        if value is None:  # what Typer answers before any conversion
            return () if multiple else None
        plain = _UNSET if multiple else _plain(value, param.type_descriptor)
        if plain is not _UNSET:
            return plain
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(param.type_descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)


def _plain(value: Any, descriptor: Any) -> Any:
    """The converted value when no conversion is needed, else _UNSET."""
    info = descriptor.parameter_info
    if getattr(info, "parser", None) is not None:
        return _UNSET
    annotation = descriptor.annotation
    if annotation is str and isinstance(value, str):
        return value
    if annotation is Path and isinstance(value, str) and value and value != "-" \
            and all(getattr(info, k, v) == v for k, v in _UNCHECKED_PATH.items()):
        return Path(value)
    if annotation is int and info.min is None and info.max is None:
        if type(value) is int:
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit():
            return int(value)
    return _UNSET


def _commands(command: Any) -> Iterator[Any]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _commands(sub)


def plain_values_first(root: Any) -> Any:
    """Give every Typer parameter of `root` and the commands below it plain-value
    conversion first (in place); returns `root`. Parameters of another kind, or of a Typer
    without this protocol, are left as they are (they then convert as before)."""
    for command in _commands(root):
        for param in getattr(command, "params", ()):
            _plain_first(param)
        _help_option_plain_first(command)
    return root


def _plain_first(param: Any) -> None:
    if param is not None and hasattr(param, "type_descriptor") and getattr(param, "_runtime_param", _UNSET) is None:
        param._runtime_param = _PlainFirst()


def _help_option_plain_first(command: Any) -> None:
    """`--help` is made by click when a command parses its arguments: convert it here too."""
    made = getattr(command, "get_help_option", None)
    if made is None:
        return

    def get_help_option(ctx: Any) -> Any:
        option = made(ctx)
        _plain_first(option)
        return option

    command.get_help_option = get_help_option
