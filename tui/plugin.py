"""The TUI's plugin: the `zoo tui` command."""
from zoo.plugins import Plugin

PLUGIN = Plugin("tui", commands="tui.command:install")
