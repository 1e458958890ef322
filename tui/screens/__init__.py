"""Screens of the TUI: the catalog browser, runs, compare, prompts and help."""
