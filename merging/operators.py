"""Every entry of the merge-method table as the operator `merge.<name>`, registered here and
only here (the plugin points at this module). A streaming method runs on the engine with
the params every streaming merge shares (MergeParams); an evaluated method is its own
operator function with its own params."""
from __future__ import annotations

from zoo.registry import InputSpec, Operator, register
from zoo.runner import OperatorCall, OperatorOutput

from .engine import merge_checkpoints
from .methods import MergeMethod, all_methods
from .spec import params_for


def _on_engine(method: MergeMethod):
    """The operator function of a streaming method: the input with role 'base' (if the method
    takes one) and the others, merged tensor by tensor."""

    def fn(call: OperatorCall) -> OperatorOutput:
        roles = [p.role for p, _ in call.inputs]  # the runner has checked them against inputs_of(method)
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


def inputs_of(method: MergeMethod) -> tuple[InputSpec, ...]:
    """The method's contract: one `base` if it needs one (none otherwise: a base given to a
    method without one is one more `input`, see merging.api), and its number of models."""
    models = InputSpec("input", method.min_models, method.max_models)
    return (InputSpec("base"), models) if method.needs_base else (models,)


def operator_of(method: MergeMethod) -> Operator:
    if method.evaluate is not None:
        params, fn = method.params, method.evaluate
    else:
        params, fn = params_for(method), _on_engine(method)
    return Operator(f"merge.{method.name}", method.version, params, fn, method.summary, relation="merge",
                    inputs=inputs_of(method))


for _method in all_methods():
    register(operator_of(_method))
