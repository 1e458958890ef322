"""Reading a `zoo` command line before the CLI is loaded: which command it runs, and the
path of a plain `zoo add` (light: the console script uses it before any import)."""
from __future__ import annotations

ROOT_VALUE_OPTIONS = ("--catalog", "-C")  # the root options that take a value (zoo.cli's _root)
_ADD_VALUE_OPTIONS = ("--name", "-n", "--tag", "-t", "--parent", "-p")  # zoo add's options with a value


def _command_at(argv: list[str]) -> int | None:
    """The index of the command word (the first word after the root options), or None."""
    args = iter(enumerate(argv))
    for i, arg in args:
        if arg in ROOT_VALUE_OPTIONS:
            next(args, None)
        elif arg == "--":
            return None
        elif not arg.startswith("-"):
            return i
    return None


def command_name(argv: list[str]) -> str | None:
    """The command `argv` runs (its first word after the root options), or None."""
    i = _command_at(argv)
    return None if i is None else argv[i]


def add_path(argv: list[str]) -> str | None:
    """The PATH of a plain `zoo [--catalog X] add PATH [options]` that indexes in place, else
    None (anything unusual is left to the CLI to parse and judge)."""
    i = _command_at(argv)
    if i is None or argv[i] != "add":
        return None
    path = None
    args = iter(argv[i + 1:])
    for arg in args:
        if arg in ("--copy", "--help", "-h", "--"):
            return None
        if arg in _ADD_VALUE_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            if path is not None:
                return None
            path = arg
    return path
