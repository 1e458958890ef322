"""The core's own plugin: its training operators (`init.*`, `train.*`) and the demo zoo's
steps (`demo.*`), found through the same entry point as every operator package's."""
from .plugins import Plugin

PLUGIN = Plugin("zoo", operators=("zoo.training", "zoo.demo"), prefixes=("init", "train", "demo"))
