"""Widgets of the TUI: they show what screens hand them and hold no catalog logic."""
