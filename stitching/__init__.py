"""stitching: operators that build variable-sized models from several pretrained ones -
SN-Net / SN-Netv2 stitched networks, their exported configurations, and learngenes
(Learngene Pool, SWS). Importing registers the operators."""
from . import export as _export  # noqa: F401  (registers stitch.export)
from . import learngene_pool as _pool  # noqa: F401  (registers learngene.pool)
from . import snnet as _snnet  # noqa: F401  (registers stitch.snnet)
from . import sws as _sws  # noqa: F401  (registers learngene.sws, learngene.expand)

__all__: list[str] = []
