"""Run a registered operator: resolve inputs from the catalog, reuse a cached result when
the same operator, params and input digests ran before, write to the store, and register
the outputs (one or several) with their one run and lineage in one transaction."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .catalog import Catalog, ModelEntry, NewEntry, Parent, RunRecord
from .card import model_card
from .checkpoint import Checkpoint
from .launch import barrier, launched_processes, on_main_process
from .registry import Operator, OperatorParams, get_operator
from .writer import CheckpointWriter, TensorSpec, WrittenCheckpoint, specs_from_tensors


@dataclass
class OutputTarget:
    """One output of a call: the name it is registered under, the fresh store folder it is
    written to, and (for one of several outputs) what sets it apart from the others, which
    its card, its metadata and the run's outputs list record."""

    call: "OperatorCall"
    name: str
    path: Path
    detail: dict | None = None
    summary: str = ""
    library: str | None = "transformers"

    def card(self) -> str:
        params = self.call.params.model_dump(mode="json")
        return model_card(self.name, self.call.operator.name, params, _parent_rows(self.call.recorded_inputs()),
                          self.call.operator.relation, library=self.library, summary=self.summary)

    def metadata(self) -> dict:
        op, call = self.call.operator, self.call
        meta = {"operator": op.name, "version": op.version, "params": call.params.model_dump(mode="json"),
                "inputs": [{"ref": e.ref, "digest": e.digest, "role": p.role} for p, e in call.recorded_inputs()]}
        return {**meta, "output": self.detail} if self.detail else meta

    def writer(self, specs: Sequence[TensorSpec], **kwargs: Any) -> CheckpointWriter:
        """A writer to this output's folder that also writes the model card and provenance metadata."""
        extra = {"README.md": self.card(), **kwargs.pop("extra_files", {})}
        return CheckpointWriter(self.path, specs, extra_files=extra, metadata=self.metadata(), **kwargs)

    def write_tensors(self, tensors: Mapping[str, Any], **kwargs: Any) -> WrittenCheckpoint:
        """Write an in-memory state dict (small models made in memory) as this output."""
        with self.writer(specs_from_tensors(tensors), **kwargs) as w:
            for name, t in tensors.items():
                w.write(name, t)
        return w.result


@dataclass
class OperatorCall:
    """What an operator function receives. An operator with one output writes it with
    `writer`/`write_tensors` (to `target`, named `out_name`); one with several asks
    `new_output(name)` for each and returns one `OperatorOutput` per output."""

    operator: Operator
    catalog: Catalog
    inputs: list[tuple[Parent, ModelEntry]]
    params: OperatorParams
    target: Path
    out_name: str
    progress: Callable[[int], None] | None = None
    options: dict = field(default_factory=dict)  # how to run (device, workers): not part of the cache key
    lineage: list[tuple[Parent, ModelEntry]] | None = None  # set by operators that choose among their inputs
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, recorded with the run
    _open: dict[int, Checkpoint] = field(default_factory=dict)
    _outputs: dict[str, OutputTarget] = field(default_factory=dict)

    def set_lineage(self, parents: Sequence[Parent]) -> None:
        """Record these edges instead of the inputs as given (e.g. a greedy soup marks the
        models it rejected as `candidate`). Each parent must be one of the inputs; the model
        card written after this call shows the same lineage."""
        by_ref = {}
        for p, e in self.inputs:
            by_ref.update({p.ref: e, e.id: e, e.ref: e})
        missing = [p.ref for p in parents if p.ref not in by_ref]
        if missing:
            raise ValueError(f"{self.operator.name}: lineage names {missing[0]!r}, which is not an input")
        self.lineage = [(p, by_ref[p.ref]) for p in parents]

    def recorded_inputs(self) -> list[tuple[Parent, ModelEntry]]:
        return self.lineage if self.lineage is not None else self.inputs

    def checkpoint(self, i: int) -> Checkpoint:
        if i not in self._open:
            self._open[i] = self.catalog.open(self.inputs[i][1])
        return self._open[i]

    # ----- outputs -----------------------------------------------------------------------
    def new_output(self, name: str, *, detail: dict | None = None, summary: str = "",
                   library: str | None = "transformers") -> OutputTarget:
        """One more output, registered as `name` with the run's other outputs (each in its
        own store folder, with its own card and metadata)."""
        if name in self._outputs or name == self.out_name:
            raise ValueError(f"{self.operator.name}: two outputs named {name!r}")
        self._outputs[name] = OutputTarget(self, name, self.catalog.incoming_path(), detail, summary, library)
        return self._outputs[name]

    def output(self, name: str | None = None) -> OutputTarget:
        """The output named `name` (`new_output`), or the call's own (`out_name`, `target`)."""
        if name is None or name == self.out_name:
            return OutputTarget(self, self.out_name, self.target)
        try:
            return self._outputs[name]
        except KeyError:
            raise ValueError(f"{self.operator.name}: no output named {name!r} (ask call.new_output for it)") from None

    def output_paths(self) -> list[Path]:
        return [self.target, *(o.path for o in self._outputs.values())]

    def card(self) -> str:
        return self.output().card()

    def writer(self, specs: Sequence[TensorSpec], **kwargs: Any) -> CheckpointWriter:
        """A writer to `target` that also writes the model card and provenance metadata."""
        return self.output().writer(specs, **kwargs)

    def write_tensors(self, tensors: Mapping[str, Any], **kwargs: Any) -> WrittenCheckpoint:
        """Write an in-memory state dict (small models made in memory) as the output."""
        return self.output().write_tensors(tensors, **kwargs)


@dataclass
class OperatorOutput:
    """One model an operator made. An operator returns one, or a list (one per output)."""

    written: WrittenCheckpoint
    metrics: dict | None = None
    notes: dict | None = None  # decisions worth recording with the run (e.g. tensors copied as-is)
    name: str | None = None  # the `new_output` it was written to; None: the call's own output
    tags: Sequence[str] = ()  # on top of the run's tags


@dataclass
class RunResult:
    """Every entry the run registered (or the cached run had), in the operator's order."""

    entries: list[ModelEntry]
    reused: bool
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def entry(self) -> ModelEntry:
        return self.entries[0]


def _parent_rows(inputs: list[tuple[Parent, ModelEntry]]) -> list[dict]:
    return [{"ref": e.ref, "name": e.name, "location": e.location, "digest": e.digest, "role": p.role,
             "weight": p.weight} for p, e in inputs]


def cache_key(op: Operator, params: OperatorParams, inputs: list[tuple[Parent, ModelEntry]]) -> str:
    """Same operator, version, params and input digests (with roles/weights) -> same key."""
    doc = {
        "operator": op.name,
        "version": op.version,
        "params": params.model_dump(mode="json"),
        "inputs": [[e.digest, p.role, p.weight] for p, e in inputs],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def run_operator(
    catalog: Catalog,
    name: str,
    inputs: Sequence[Parent],
    params: dict | OperatorParams | None = None,
    out_name: str | None = None,
    *,
    tags: Sequence[str] = (),
    reuse: bool = True,
    progress: Callable[[int], None] | None = None,
    options: dict | None = None,
) -> RunResult:
    """Run operator `name` on `inputs`, or reuse the run with the same cache key. The
    operator returns one `OperatorOutput` or a list of them; all are registered with one
    run and its lineage in one transaction, and a reused run gives back all its entries."""
    op = get_operator(name)
    p = params if isinstance(params, op.params) else op.validate(params if isinstance(params, dict) else None)
    resolved = [(parent, catalog.get(parent.ref)) for parent in inputs]
    key = cache_key(op, p, resolved)
    if launched_processes() > 1:
        barrier()  # every process decides on the same catalog state: all reuse, or all run
    if reuse:
        hit = catalog.find_run(key)
        if hit is not None and (out_name is None or hit[1][0].name == out_name):
            return RunResult(hit[1], reused=True, seconds=0.0)
    out_name = out_name or f"{op.name.replace('.', '-')}-{key[:8]}"
    call = OperatorCall(op, catalog, resolved, p, catalog.incoming_path(), out_name, progress, dict(options or {}))
    t0 = time.perf_counter()
    try:
        outputs = _outputs_of(call, op.fn(call))
    except BaseException:
        _discard(call.output_paths())
        raise
    seconds = time.perf_counter() - t0
    _discard(set(call.output_paths()) - {o.written.path for o in outputs})  # asked for but not returned

    def register() -> list[ModelEntry]:
        return _register(catalog, op, p, key, seconds, outputs, call, tags)

    if launched_processes() > 1:  # `accelerate launch` / torchrun: every rank ran it, rank 0 records it
        return _record_once(catalog, key, outputs, register, seconds, call.timings)
    return RunResult(register(), False, seconds, dict(call.timings))


def _outputs_of(call: OperatorCall, result: OperatorOutput | Sequence[OperatorOutput]) -> list[OperatorOutput]:
    """The operator's return value as a list, with every output named once."""
    outputs = [result] if isinstance(result, OperatorOutput) else list(result)
    if not outputs:
        raise ValueError(f"{call.operator.name}: the operator returned no output")
    names = [call.output(o.name).name for o in outputs]  # an unknown name fails here, before registering
    if len(set(names)) != len(names):
        raise ValueError(f"{call.operator.name}: an output was returned twice")
    return outputs


def _discard(paths) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _record_once(catalog: Catalog, key: str, outputs: list[OperatorOutput], register: Callable[[], list[ModelEntry]],
                 seconds: float, timings: dict) -> RunResult:
    """The main process registers the outputs; the others drop their identical copies and
    read the entries the main process recorded."""
    entries = on_main_process(register, others=lambda: _discard(o.written.path for o in outputs))
    if entries is None:
        hit = catalog.find_run(key)
        if hit is None:
            from .errors import ZooError

            raise ZooError("the main process did not record the run (see its error)")
        entries = hit[1]
    return RunResult(entries, reused=False, seconds=seconds, timings=dict(timings))


def _register(catalog: Catalog, op: Operator, p: OperatorParams, key: str, seconds: float,
              outputs: list[OperatorOutput], call: OperatorCall, tags: Sequence[str]) -> list[ModelEntry]:
    """Every output, the one run that made them and its lineage: one transaction."""
    notes = {k: v for o in outputs for k, v in (o.notes or {}).items()}
    timings = {**call.timings, **({"notes": notes} if notes else {})}
    run = RunRecord(op.name, op.version, p.model_dump(mode="json"), cache_key=key, seconds=seconds,
                    timings=timings or None)
    new = []
    for o in outputs:
        target = call.output(o.name)
        new.append(NewEntry(o.written, target.name, tags=[*tags, *o.tags], metrics=o.metrics, detail=target.detail))
    return catalog.register_many(new, run=run, inputs=[parent for parent, _ in call.recorded_inputs()])
