"""Every entry of the merge-method table as the operator `merge.<name>`, registered here and
only here (the plugin points at this module). A streaming method runs on the engine with
the params every streaming merge shares (MergeParams); an evaluated method is its own
operator function with its own params."""
from __future__ import annotations

from zoo.errors import ZooError
from zoo.registry import Operator, register
from zoo.runner import OperatorCall, OperatorOutput

from .engine import merge_checkpoints
from .methods import MergeMethod, all_methods
from .spec import MergeParams


def _on_engine(method: MergeMethod):
    """The operator function of a streaming method: inputs with role 'base' (at most one) and
    the others, merged tensor by tensor."""

    def fn(call: OperatorCall) -> OperatorOutput:
        roles = [p.role for p, _ in call.inputs]
        if roles.count("base") > 1:
            raise ZooError(f"merge.{method.name}: more than one input has role 'base'")
        base = call.checkpoint(roles.index("base")) if "base" in roles else None
        models = [call.checkpoint(i) for i, r in enumerate(roles) if r != "base"]
        writer, report = merge_checkpoints(
            method, base, models, call.params, call.writer,
            device=call.options.get("device", "cpu"), workers=call.options.get("workers", 2),
            progress=call.progress,
        )
        notes = {k: v for k, v in vars(report).items() if v}
        return OperatorOutput(writer.result, notes=notes or None)

    return fn


def operator_of(method: MergeMethod) -> Operator:
    if method.evaluate is not None:
        params, fn = method.params, method.evaluate
    else:
        params, fn = MergeParams, _on_engine(method)
    return Operator(f"merge.{method.name}", method.version, params, fn, method.summary, relation="merge")


for _method in all_methods():
    register(operator_of(_method))
