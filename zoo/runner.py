"""Run a registered operator: resolve inputs from the catalog, reuse a cached result when
the same operator, params and input digests ran before, write to the store, and register
the output with its run and lineage in one transaction."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .catalog import Catalog, ModelEntry, Parent, RunRecord
from .card import model_card
from .checkpoint import Checkpoint
from .launch import barrier, launched_processes, on_main_process
from .registry import Operator, OperatorParams, get_operator
from .writer import CheckpointWriter, TensorSpec, WrittenCheckpoint, specs_from_tensors


@dataclass
class OperatorCall:
    """What an operator function receives."""

    operator: Operator
    catalog: Catalog
    inputs: list[tuple[Parent, ModelEntry]]
    params: OperatorParams
    target: Path
    out_name: str
    progress: Callable[[int], None] | None = None
    options: dict = field(default_factory=dict)  # how to run (device, workers): not part of the cache key
    lineage: list[tuple[Parent, ModelEntry]] | None = None  # set by operators that choose among their inputs
    _open: dict[int, Checkpoint] = field(default_factory=dict)

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

    def card(self) -> str:
        params = self.params.model_dump(mode="json")
        return model_card(self.out_name, self.operator.name, params, _parent_rows(self.recorded_inputs()),
                          self.operator.relation)

    def writer(self, specs: Sequence[TensorSpec], **kwargs: Any) -> CheckpointWriter:
        """A writer to `target` that also writes the model card and provenance metadata."""
        extra = {"README.md": self.card(), **kwargs.pop("extra_files", {})}
        meta = {"operator": self.operator.name, "version": self.operator.version,
                "params": self.params.model_dump(mode="json"),
                "inputs": [{"ref": e.ref, "digest": e.digest, "role": p.role} for p, e in self.recorded_inputs()]}
        return CheckpointWriter(self.target, specs, extra_files=extra, metadata=meta, **kwargs)

    def write_tensors(self, tensors: Mapping[str, Any], **kwargs: Any) -> WrittenCheckpoint:
        """Write an in-memory state dict (small models made in memory) as the output."""
        with self.writer(specs_from_tensors(tensors), **kwargs) as w:
            for name, t in tensors.items():
                w.write(name, t)
        return w.result


@dataclass
class OperatorOutput:
    written: WrittenCheckpoint
    metrics: dict | None = None
    notes: dict | None = None  # decisions worth recording with the run (e.g. tensors copied as-is)


@dataclass
class RunResult:
    entry: ModelEntry
    reused: bool
    seconds: float


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
    op = get_operator(name)
    p = params if isinstance(params, op.params) else op.validate(params if isinstance(params, dict) else None)
    resolved = [(parent, catalog.get(parent.ref)) for parent in inputs]
    key = cache_key(op, p, resolved)
    if launched_processes() > 1:
        barrier()  # every process decides on the same catalog state: all reuse, or all run
    if reuse:
        hit = catalog.find_run(key)
        if hit is not None and (out_name is None or hit[1][0].name == out_name):
            return RunResult(hit[1][0], reused=True, seconds=0.0)
    out_name = out_name or f"{op.name.replace('.', '-')}-{key[:8]}"
    target = catalog.incoming_path()
    call = OperatorCall(op, catalog, resolved, p, target, out_name, progress, dict(options or {}))
    t0 = time.perf_counter()
    try:
        output: OperatorOutput = op.fn(call)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    if launched_processes() > 1:  # `accelerate launch` / torchrun: every rank ran it, rank 0 records it
        return _record_once(catalog, key, output, lambda: _register(catalog, op, p, key, seconds, output, call,
                                                                     out_name, tags), seconds)
    return RunResult(_register(catalog, op, p, key, seconds, output, call, out_name, tags), False, seconds)


def _record_once(catalog: Catalog, key: str, output: OperatorOutput, register: Callable[[], ModelEntry],
                 seconds: float) -> RunResult:
    """The main process registers the output; the others drop their identical copy and
    read the entry the main process recorded."""
    entry = on_main_process(register, others=lambda: shutil.rmtree(output.written.path, ignore_errors=True))
    if entry is None:
        hit = catalog.find_run(key)
        if hit is None:
            from .errors import ZooError

            raise ZooError("the main process did not record the run (see its error)")
        entry = hit[1][0]
    return RunResult(entry, reused=False, seconds=seconds)


def _register(catalog: Catalog, op: Operator, p: OperatorParams, key: str, seconds: float, output: OperatorOutput,
              call: OperatorCall, out_name: str, tags: Sequence[str]) -> ModelEntry:
    run = RunRecord(op.name, op.version, p.model_dump(mode="json"), cache_key=key, seconds=seconds,
                    timings={"notes": output.notes} if output.notes else None)
    return catalog.register(output.written, out_name, run=run, inputs=[parent for parent, _ in call.recorded_inputs()],
                            tags=tags, metrics=output.metrics)
