"""Evaluation (and training) tasks on data that ships offline: scikit-learn's digits for
vision families, Python's own sources for language families. Users add their own with
`register_task`."""
from __future__ import annotations

from typing import Callable

from ..errors import ZooError
from .base import Task

_TASKS: dict[str, Callable[[str | None], Task]] = {}


def register_task(name: str, factory: Callable[[str | None], Task]) -> None:
    """`factory(variant)` builds the task; `variant` is what follows ':' in `name:variant`."""
    _TASKS[name] = factory


def get_task(spec: str) -> Task:
    name, _, variant = spec.partition(":")
    factory = _TASKS.get(name)
    if factory is None:
        raise ZooError(f"unknown task {spec!r} (known: {', '.join(sorted(_TASKS))}; e.g. digits, digits:0-4, pytext)")
    return factory(variant or None)


def all_tasks() -> list[str]:
    return sorted(_TASKS)


from . import digits, pytext  # noqa: E402,F401  (register the built-ins)

__all__ = ["Task", "all_tasks", "get_task", "register_task"]
