"""Packages whose public names load on first use, so importing the package is cheap (the
`zoo` command imports `zoo`, `zoo.catalog` and every plugin's package at start-up)."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`: `exports` maps each public name to the module
    that defines it; a name is imported when first asked for, then kept on the package."""

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(set(exports) | set(vars(sys.modules[package])))

    return getattr_, dir_
