"""stitching: operators that build variable-sized models from several pretrained ones -
SN-Net / SN-Netv2 stitched networks, their exported configurations, and learngenes
(Learngene Pool, SWS). `stitching.operators` registers them; the package's plugin
(`stitching.plugin`) tells the zoo where to find them."""
