"""`example.scale`: every tensor of the source multiplied by `factor`."""
from __future__ import annotations

from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput


class ScaleParams(OperatorParams):
    factor: float = 1.0


def _scale(call: OperatorCall) -> OperatorOutput:
    ckpt = call.checkpoint(0)
    tensors = {n: ckpt.get(n) * call.params.factor for n in ckpt.names()}
    return OperatorOutput(call.write_tensors(tensors, config=ckpt.config))


register(Operator("example.scale", "1", ScaleParams, _scale, "multiply every tensor by a factor",
                  default_role="source",
                  inputs=(InputSpec("source"),)))
