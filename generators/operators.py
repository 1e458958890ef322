"""Importing this registers the generators package's operators (the plugin points here)."""
from . import expand, lemon  # noqa: F401  (expand.*; the `lemon` learning-rate schedule)
from .wgen import operators  # noqa: F401  (generate.*)
