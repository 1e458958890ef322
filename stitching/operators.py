"""Importing this registers the stitching package's operators (the plugin points here)."""
from . import export, learngene_pool, snnet, sws  # noqa: F401  (stitch.export, learngene.pool, stitch.snnet, learngene.sws/expand)
