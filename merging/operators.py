"""Every entry of the merge-method table as the operator `merge.<name>`, registered here and
only here (the plugin points at this module). A streaming method runs on the engine with
the params every streaming merge shares (MergeParams); an evaluated method is its own
operator function with its own params."""
from __future__ import annotations

from zoo.registry import InputSpec, Operator, register
from zoo.runner import OperatorCall, OperatorOutput

from .engine import merge_checkpoints
from .mergekit_export import extra_files
from .lora import ADAPTER_ROLE, adapted_inputs
from .methods import MergeMethod, all_methods
from .slices import OPERATOR_DEF as SLICES_OPERATOR
from .spec import params_for


def _on_engine(method: MergeMethod):
    """The operator function of a streaming method: the input with role 'base' (if the method
    takes one) and the others, merged tensor by tensor."""

    def fn(call: OperatorCall) -> OperatorOutput:
        inputs = adapted_inputs(call)  # roles checked by the runner; each adapter applied to its model
        base = next((c for r, c in inputs if r == "base"), None)
        models = [c for r, c in inputs if r != "base"]
        writer, report = merge_checkpoints(
            method, base, models, call.params, _writer_with_mergekit_config(call),
            device=call.options.get("device", "cpu"), workers=call.options.get("workers", 2),
            progress=call.progress,
        )
        notes = {k: v for k, v in vars(report).items() if v}
        return OperatorOutput(writer.result, notes=notes or None)

    return fn


def _writer_with_mergekit_config(call: OperatorCall):
    """call.writer, also writing mergekit_config.yml (the merge as mergekit YAML) like mergekit."""

    def open_writer(specs, **kwargs):
        return call.writer(specs, extra_files={**extra_files(call), **kwargs.pop("extra_files", {})}, **kwargs)

    return open_writer


def inputs_of(method: MergeMethod) -> tuple[InputSpec, ...]:
    """The method's contract: one `base` if it needs one (none otherwise: a base given to a
    method without one is one more `input`, see merging.api), and its number of models."""
    models = InputSpec("input", method.min_models, method.max_models)
    adapters = InputSpec(ADAPTER_ROLE, 0, None)  # LoRA adapters, each applied to the model listed before it
    if method.optional_base:  # nuslerp, multislerp: with a base, or without one
        return (InputSpec("base", 0, 1), models, adapters)
    return (InputSpec("base"), models, adapters) if method.needs_base else (models, adapters)


def operator_of(method: MergeMethod) -> Operator:
    if method.evaluate is not None:
        params, fn = method.params, method.evaluate
    else:
        params, fn = params_for(method), _on_engine(method)
    return Operator(f"merge.{method.name}", method.version, params, fn, method.summary, relation="merge",
                    inputs=inputs_of(method))


for _method in all_methods():
    register(operator_of(_method))

from . import extract_lora  # noqa: E402,F401 - registers merge.extract_lora
from .moe import operator as _moe  # noqa: E402,F401 - registers merge.moe (mergekit-moe)


register(SLICES_OPERATOR)  # mergekit's slices: (merging.slices)
