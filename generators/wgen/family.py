"""`zoo_mlp`: a tiny image-classifier MLP (flatten -> Linear -> ReLU -> ... -> Linear), the
model of weight-generation populations (hundreds of small models trained on digits tasks).

config: {"model_type": "zoo_mlp", "architectures": ["ZooMLP"], "layer_sizes": [64, 32, 10],
         "image_size": 8, "num_channels": 1, "num_labels": 10}
tensors: layers.{i}.weight [layer_sizes[i+1], layer_sizes[i]] and layers.{i}.bias, one
nn.Linear per consecutive pair of sizes; ReLU between layers, none after the last.

Registered when the generators plugin's families are loaded. torch is imported only when a
model is built (families are loaded by light commands); `ZooMLP` and `MLPOutput` are made on
first use and reachable as attributes of this module.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.families import Axis, Family, TensorRole, register_family

if TYPE_CHECKING:
    from torch import nn

    from zoo.checkpoint import Checkpoint

MODEL_TYPE = "zoo_mlp"
DEFAULT_LAYER_SIZES = (64, 32, 10)


def mlp_config(layer_sizes=DEFAULT_LAYER_SIZES, image_size: int = 8, num_channels: int = 1) -> dict:
    """The config.json of a ZooMLP with these layer sizes (first = image_size^2 * channels)."""
    sizes = [int(s) for s in layer_sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ZooError(f"zoo_mlp: layer sizes {sizes} need at least an input and an output size, all positive")
    if sizes[0] != image_size * image_size * num_channels:
        raise ZooError(f"zoo_mlp: the first layer size must be {image_size}x{image_size}x{num_channels} = "
                       f"{image_size * image_size * num_channels} (the flattened image), not {sizes[0]}")
    return {"model_type": MODEL_TYPE, "architectures": ["ZooMLP"], "layer_sizes": sizes,
            "image_size": image_size, "num_channels": num_channels, "num_labels": sizes[-1]}


@lru_cache(maxsize=1)
def _classes() -> dict[str, type]:
    from dataclasses import dataclass

    import torch
    from torch import nn

    @dataclass
    class MLPOutput:
        logits: torch.Tensor

    class ZooMLP(nn.Module):
        """Flatten the image, then Linear layers with ReLU between them."""

        def __init__(self, layer_sizes=DEFAULT_LAYER_SIZES):
            super().__init__()
            sizes = [int(s) for s in layer_sizes]
            self.layer_sizes = sizes
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

        def forward(self, pixel_values: torch.Tensor = None, **_: Any) -> MLPOutput:
            h = pixel_values.flatten(1)
            last = len(self.layers) - 1
            for i, layer in enumerate(self.layers):
                h = layer(h)
                if i < last:
                    h = torch.relu(h)
            return MLPOutput(h)

    MLPOutput.__module__ = ZooMLP.__module__ = __name__
    MLPOutput.__qualname__, ZooMLP.__qualname__ = "MLPOutput", "ZooMLP"
    return {"ZooMLP": ZooMLP, "MLPOutput": MLPOutput}


def __getattr__(name: str):  # ZooMLP, MLPOutput: made (importing torch) on first use
    if name in ("ZooMLP", "MLPOutput"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MLPFamily(Family):
    name = MODEL_TYPE
    norm = "none"
    modality = "vision"
    architectures = ("ZooMLP",)
    _layer_re = re.compile(r"^layers\.(\d+)\.")

    def widths(self, config: dict):
        raise KeyError("zoo_mlp models have layer sizes, not transformer widths")

    def role(self, name: str, config: dict) -> TensorRole | None:
        m = re.fullmatch(r"layers\.(\d+)\.(weight|bias)", name)
        if not m:
            return None
        layer = int(m.group(1))
        if layer >= len(config.get("layer_sizes") or DEFAULT_LAYER_SIZES) - 1:
            return None
        axes = (Axis.KEEP, Axis.KEEP) if m.group(2) == "weight" else (Axis.KEEP,)
        return TensorRole(axes, layer=layer, kind="linear")

    def build(self, config: dict) -> "nn.Module":
        """A randomly initialised ZooMLP (eval mode; seed torch's RNG for a fixed init)."""
        sizes = mlp_config(config.get("layer_sizes", DEFAULT_LAYER_SIZES), config.get("image_size", 8),
                           config.get("num_channels", 1))["layer_sizes"]
        return _classes()["ZooMLP"](sizes).eval()

    def load(self, ckpt: "Checkpoint") -> "nn.Module":
        model = self.build(ckpt.config or {})
        try:
            model.load_state_dict({n: ckpt.get(n) for n in ckpt.names()}, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ZooError(f"{ckpt.path}: tensors do not fit its zoo_mlp config {ckpt.config}: {first}") from None
        return model.eval()

    def example_inputs(self, config: dict, batch: int, generator) -> dict:
        import torch

        size, ch = config.get("image_size", 8), config.get("num_channels", 1)
        return {"pixel_values": torch.randn(batch, ch, size, size, generator=generator)}


register_family(MLPFamily())
