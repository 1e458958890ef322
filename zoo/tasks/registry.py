"""The one registry of tasks: name -> factory. The built-ins (digits, pytext) register from
their modules; plugins list modules in `Plugin(tasks=...)`, loaded on the first unknown name."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..errors import ZooError

if TYPE_CHECKING:
    from .base import Task

_TASKS: dict[str, Callable[[str | None], "Task"]] = {}


def register_task(name: str, factory: Callable[[str | None], "Task"]) -> None:
    """`factory(variant)` builds the task; `variant` is what follows ':' in `name:variant`."""
    _TASKS[name] = factory


def _load() -> None:
    from importlib import import_module

    from ..plugins import load_tasks

    for builtin in ("zoo.tasks.digits", "zoo.tasks.pytext"):
        import_module(builtin)
    load_tasks()


def get_task(spec: str) -> "Task":
    name, _, variant = spec.partition(":")
    if name not in _TASKS:
        _load()
    factory = _TASKS.get(name)
    if factory is None:
        raise ZooError(f"unknown task {spec!r} (known: {', '.join(sorted(_TASKS))}; e.g. digits, digits:0-4, pytext)")
    return factory(variant or None)


def all_tasks() -> list[str]:
    _load()
    return sorted(_TASKS)
