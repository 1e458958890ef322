"""The `stitched` family: blocks of several models of one family run as one chain, joined
by linear stitching layers (SN-Net and its descendants). Registered when the stitching
plugin's families are loaded, so the catalog and `zoo eval` read stitched checkpoints
(`format.py` says what one holds; `network.py` runs it)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.errors import ZooError
from zoo.families import Axis, Family, TensorRole, get_family, register_family

from .format import MODEL_TYPE, parse_configs

if TYPE_CHECKING:
    from torch import nn

    from zoo.checkpoint import Checkpoint


class StitchedFamily(Family):
    name = MODEL_TYPE
    architectures = ("StitchedNetwork",)

    def _inner(self, config: dict) -> Family:
        return get_family(config["stitched"]["family"])

    def modality_for(self, config: dict) -> str:
        return self._inner(config).modality

    def widths(self, config: dict):
        raise KeyError("stitched networks have one width per anchor")

    def role(self, name: str, config: dict) -> TensorRole | None:
        if name.startswith("stitches."):
            return TensorRole((Axis.KEEP,) * (2 if name.endswith("weight") else 1), kind="stitch")
        if name.startswith("anchors."):
            _, i, rest = name.split(".", 2)
            return self._inner(config).role(rest, config["stitched"]["anchors"][int(i)])
        return None

    def build(self, config: dict) -> "nn.Module":
        from .network import StitchedNetwork

        st = config["stitched"]
        inner = self._inner(config)
        anchors = [inner.build(c) for c in st["anchors"]]
        net = StitchedNetwork(inner, anchors, {k: tuple(v) for k, v in st["stitches"].items()}, parse_configs(config))
        return net.select(st["selected"]).eval()

    def load(self, ckpt: "Checkpoint") -> "nn.Module":
        net = self.build(ckpt.config)
        state = {n: ckpt.get(n) for n in ckpt.names()}
        missing, unexpected = net.load_state_dict(state, strict=False)
        heads = self._inner(ckpt.config).tied_head_names
        tied = {n for n in missing if n.split(".", 2)[-1] in heads}  # tied to embeddings, not stored
        if set(missing) - tied or unexpected:
            bad = sorted(set(missing) - tied) or sorted(unexpected)
            raise ZooError(f"{ckpt.path}: stitched checkpoint does not match its config ({bad[0]!r}, "
                           f"{len(bad)} tensor(s) {'missing' if set(missing) - tied else 'unexpected'})")
        return net.eval()

    def example_inputs(self, config: dict, batch: int, generator):
        return self._inner(config).example_inputs(config, batch, generator)

    def outputs(self, model, inputs):
        return model(**inputs).logits


register_family(StitchedFamily())
