"""Plugins: how operator packages (the built-in `merging`, `stitching`, `generators`, the
`tui` front end, and any third-party package) extend the zoo without the core naming them.

A package declares one `Plugin` object under the `weightzoo.plugins` entry-point group:

    [project.entry-points."weightzoo.plugins"]
    merging = "merging.plugin:PLUGIN"

Everything in a `Plugin` is a module path (a string), so reading the plugin list imports
nothing heavy: operators, families and commands are imported only when asked for.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

GROUP = "weightzoo.plugins"


@dataclass(frozen=True)
class Plugin:
    """What one package contributes, by module path."""

    name: str
    operators: tuple[str, ...] = ()  # modules whose import registers operators (zoo.registry.register)
    prefixes: tuple[str, ...] = ()  # operator-name prefixes those operators use ("merge", "stitch", ...)
    families: tuple[str, ...] = ()  # modules whose import registers families (zoo.families.register_family)
    tasks: tuple[str, ...] = ()  # modules whose import registers tasks (zoo.tasks.register_task)
    commands: str | None = None  # "module:function"; the function gets the root Typer app and adds commands


_broken: list[str] = []  # one line per installed plugin that could not be loaded


@lru_cache(maxsize=1)
def plugins() -> tuple[Plugin, ...]:
    """Every installed plugin that loads, the core's own first, then by name. A broken one
    (a bug in that package) is left out and named by `broken()`, so the rest still work."""
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group=GROUP):
        try:
            plugin = ep.load()
        except Exception as e:  # noqa: BLE001 - name the broken package, keep the others working
            _broken.append(f"plugin {ep.name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}")
            continue
        if not isinstance(plugin, Plugin):
            _broken.append(f"plugin {ep.name!r} ({ep.value}) is not a zoo.plugins.Plugin")
            continue
        found.append(plugin)
    found.sort(key=lambda p: (p.name != "zoo", p.name))
    return tuple(dict((p.name, p) for p in found).values())


def broken() -> list[str]:
    """Why each installed plugin that failed to load (or to install its commands) did, among
    those loaded so far: a command of the core that needs no plugin does not load them."""
    return list(_broken)


def _import_all(modules: tuple[str, ...], optional: bool) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            if not optional:
                raise


def load_operators(prefix: str | None = None) -> None:
    """Import the operator modules of the plugins owning `prefix` (all plugins if None).
    With no prefix, a plugin whose optional dependencies are missing is passed over."""
    for p in plugins():
        if prefix is None or prefix in p.prefixes:
            _import_all(p.operators, optional=prefix is None)


def load_families() -> None:
    """Import every plugin's family modules (each registers its families)."""
    for p in plugins():
        _import_all(p.families, optional=True)


def load_tasks() -> None:
    """Import every plugin's task modules (each registers its tasks)."""
    for p in plugins():
        _import_all(p.tasks, optional=True)


def install_commands(root: Any) -> None:
    """Let every plugin add its commands to the root Typer app; a plugin whose commands
    fail to import is left out and named by `broken()`."""
    for p in plugins():
        if not p.commands:
            continue
        module, _, attr = p.commands.partition(":")
        try:
            getattr(importlib.import_module(module), attr or "install")(root)
        except Exception as e:  # noqa: BLE001 - one broken package must not take the CLI down
            _broken.append(f"plugin {p.name!r}: its commands ({p.commands}) failed: {type(e).__name__}: {e}")
