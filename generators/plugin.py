"""The generators package's plugin: expansion and weight-generation operators, the
population MLP family, and the `zoo expand` / `zoo population` / `zoo generate` commands."""
from zoo.plugins import Plugin

PLUGIN = Plugin("generators", operators=("generators.operators",), prefixes=("expand", "generate"),
                families=("generators.wgen.family",), commands="generators.commands:install")
