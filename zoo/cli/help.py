"""`--help` that says what it means, fixed once for every command (the core's and every
plugin's) on the built command tree, so no help string has to work around Rich.

- Help text is plain text, never Rich markup: Typer renders help through Rich markup, which
  swallowed every `[default: ...]` written in a help string ("Catalog name of the result .").
- Every value option tells its default: Typer's own `[default: X]`, the help string's
  (where the default is a rule, such as `--out`'s name), or `[default: none]` for a
  repeatable option given nothing.
- Types only where they help: a flag takes no value (no `<bool>`), and free text needs no
  `<str>`; numbers, paths and choices keep theirs, a repeatable option shows its item type.
- Prose paragraphs are reflowed to the terminal's width, not broken where the docstring's
  lines end.
- A command's closing `Example:` paragraph is its epilog, so it is the last thing `--help`
  prints, below the options.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Iterator

_NOISE = {"<str>", "<bool>", "<list[str]>", "<list[bool]>", "<text>"}
_LIST = re.compile(r"^<list\[(.+)\]>$")
_EXAMPLE = re.compile(r"^\s*Examples?:", re.IGNORECASE)


def commands(command: Any, path: str = "zoo") -> Iterator[tuple[str, Any]]:
    """Every command of the tree with its path (`zoo`, `zoo ls`, `zoo generate sample`, ...)."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from commands(sub, f"{path} {name}")


def polish(root: Any) -> Any:
    """Fix the help of `root` and every command below it, in place; returns `root`."""
    from rich.markup import escape

    if getattr(root, "_zoo_polished", False):
        return root
    root._zoo_polished = True
    for _, command in commands(root):
        help_text, example = split_example(command.help or "")
        if example and not command.epilog:
            command.help, command.epilog = help_text, example
        command.help = reflow(command.help) if command.help else command.help
        command.help = escape(command.help) if command.help else command.help
        command.epilog = escape(command.epilog) if command.epilog else command.epilog
        for param in getattr(command, "params", []):
            if getattr(param, "help", None):
                param.help = escape(_default_told(param))
            _quiet_type(param)
        _quiet_help_option(command)
    return root


def _quiet_help_option(command: Any) -> None:
    """`--help` is made by click when help is printed: quiet its type then."""
    made = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None:
            _quiet_type(option)
        return option

    command.get_help_option = get_help_option


def _default_told(param: Any) -> str:
    """The param's help, saying `[default: none]` for a repeatable option given no values
    by default (Typer shows nothing for an empty list)."""
    text = param.help
    repeatable = getattr(param, "multiple", False) and getattr(param, "param_type_name", "") == "option"
    if repeatable and not param.default and not param.required and "[default:" not in text:
        text = f"{text.rstrip().rstrip('.')} [default: none]."
    return text


def reflow(text: str) -> str:
    """Paragraphs as single lines, for the renderer to wrap at the terminal's width (Rich
    keeps a docstring's line breaks, which made ragged lines in `zoo --help`)."""
    return "\n\n".join(p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines())
                       for p in inspect.cleandoc(text).split("\n\n"))


def split_example(text: str) -> tuple[str, str]:
    """(help without its closing example paragraph, that paragraph or '')."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    if len(paragraphs) > 1 and _EXAMPLE.match(paragraphs[-1]):
        return "\n\n".join(paragraphs[:-1]), paragraphs[-1]
    return text, ""


def type_label(label: str | None, is_flag: bool) -> str | None:
    """The type shown beside an option or argument: None for flags and free text, the item
    type for a repeatable option (`<list[float]>` -> `<float>`), else Typer's own."""
    if is_flag or label is None or label in _NOISE:
        return None
    item = _LIST.match(label)
    return f"<{item[1]}>" if item else label


def _quiet_type(param: Any) -> None:
    """Route the param's displayed type through `type_label` (Typer >= 0.20 names it with
    `display_type_rich`; older versions show click's metavars, left as they are)."""
    shown: Callable[..., str | None] | None = getattr(param, "display_type_rich", None)
    if shown is None or getattr(shown, "_zoo_polished", False):
        return
    is_flag = bool(getattr(param, "is_flag", False)) or bool(getattr(param, "count", False))

    def display_type_rich(ctx: Any) -> str | None:
        return type_label(shown(ctx=ctx), is_flag)

    display_type_rich._zoo_polished = True  # type: ignore[attr-defined]
    param.display_type_rich = display_type_rich
