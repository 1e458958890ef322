"""The stitching package's plugin: SN-Net and learngene operators, the stitched-network
family, and the `zoo stitch` / `zoo learngene` commands."""
from zoo.plugins import Plugin

PLUGIN = Plugin("stitching", operators=("stitching.operators",), prefixes=("stitch", "learngene"),
                families=("stitching.family",), commands="stitching.commands:install")
