"""The merging package's plugin: `merge.*` operators and the `zoo merge` command."""
from zoo.plugins import Plugin

PLUGIN = Plugin("merging", operators=("merging.operators",), prefixes=("merge",), commands="merging.commands:install")
