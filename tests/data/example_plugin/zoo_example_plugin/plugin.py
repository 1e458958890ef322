from zoo.plugins import Plugin

PLUGIN = Plugin("example", operators=("zoo_example_plugin.ops",), prefixes=("example",),
                commands="zoo_example_plugin.commands:install")
