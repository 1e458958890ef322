"""Terminal output helpers shared by the front ends: sizes, progress bars, JSON."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """['density=0.5', 'weights=[1, 2]', 'task=digits'] -> values read as YAML (so numbers,
    lists, booleans and JSON come back typed; anything else stays a string). Values go
    through the size- and alias-limited loader: a command line is user input too."""
    from .errors import ZooError
    from .yaml_input import YamlLimitError, load_text

    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ZooError(f"{flag} {item!r} is not KEY=VALUE")
        try:
            out[key.strip()] = load_text(value, f"{flag} {key.strip()}")
        except YamlLimitError:
            raise
        except ZooError:  # not YAML: the text itself (e.g. a name with a colon)
            out[key.strip()] = value
    return out


def print_json(data: Any) -> None:
    """Stable machine output on stdout: UTF-8 JSON, keys in their documented order
    (orjson: 100,000 catalog rows serialise in tens of milliseconds)."""
    import orjson

    try:
        raw = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # a file name that is not valid UTF-8: escape, never crash
        import json

        text = json.dumps(data, default=str, ensure_ascii=False, separators=(",", ":"))
        raw = text.encode("utf-8", "backslashreplace")
    sys.stdout.flush()
    sys.stdout.buffer.write(raw + b"\n")
    sys.stdout.buffer.flush()


@contextmanager
def byte_progress(description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A transient progress bar on stderr, fed by byte counts (thread-safe)."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as progress:
        yield ItemProgress(progress, progress.add_task(description, total=total))


class ItemProgress:
    """Callable progress handle: `advance(n=1)`; `set_total(n)` once the work is known."""

    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task

    def __call__(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def set_total(self, total: int) -> None:
        self._progress.update(self._task, total=total)


@contextmanager
def item_progress(description: str, total: int | None = None) -> Iterator[ItemProgress]:
    """A transient progress bar on stderr counting items (tensors, steps)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as progress:
        yield ItemProgress(progress, progress.add_task(description, total=total))
