"""Run a registered operator: check its declared inputs, resolve them from the catalog
(paths are hashed, and registered only with the outputs), reuse a cached result when the
same operator, params and input digests ran before, write to the store (refusing
non-finite tensors the inputs did not already have), and register the outputs (one or
several) with their one run, their path inputs and lineage in one transaction."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .catalog import Catalog, ModelEntry, NewEntry, Parent, RunRecord, StagedInput
from .card import model_card
from .catalog.catalog import check_name
from .checkpoint import Checkpoint
from .errors import NotFoundError, ZooError
from .launch import barrier, launched_processes, on_main_process
from .registry import Operator, OperatorParams, get_operator
from .writer import CheckpointWriter, TensorSpec, WrittenCheckpoint, all_finite, specs_from_tensors


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
        """A writer to this output's folder that also writes the model card and provenance
        metadata, and checks every tensor it is given for inf/NaN (`OperatorCall.non_finite`)."""
        extra = {"README.md": self.card(), **kwargs.pop("extra_files", {})}
        return _FiniteWriter(self.call, self.path, specs, extra_files=extra, metadata=self.metadata(), **kwargs)

    def write_tensors(self, tensors: Mapping[str, Any], **kwargs: Any) -> WrittenCheckpoint:
        """Write an in-memory state dict (small models made in memory) as this output."""
        with self.writer(specs_from_tensors(tensors), **kwargs) as w:
            for name, t in tensors.items():
                w.write(name, t)
        return w.result


class _FiniteWriter(CheckpointWriter):
    """A checkpoint writer that checks each floating-point tensor (or chunk) as written, in
    the dtype it is stored in, so that an overflow to inf in a narrower dtype counts too."""

    def __init__(self, call: "OperatorCall", *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.call = call

    def write_slice(self, name: str, start: int, flat: Any) -> None:
        import torch

        dtype = getattr(torch, self._spec(name).dtype)
        if dtype.is_floating_point and flat.is_floating_point():
            flat = flat.detach().to(dtype=dtype)
            if not all_finite(flat):
                self.call.non_finite(name)
        super().write_slice(name, start, flat)


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
    notes: dict = field(default_factory=dict)  # decisions of the runner worth recording with the run
    _open: dict[int, Checkpoint] = field(default_factory=dict)
    _outputs: dict[str, OutputTarget] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _bad_inputs: list[str] | None = None  # input tensors with inf/NaN (scanned once, when first needed)

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
        with self._lock:
            if i not in self._open:
                self._open[i] = self.catalog.open(self.inputs[i][1])
            return self._open[i]

    def non_finite(self, tensor: str) -> None:
        """An output tensor holds inf/NaN. Refused (one line naming it) unless an input already
        held such values: then it is written, recorded in the run's notes and warned about."""
        with self._lock:
            if self._bad_inputs is None:
                self._bad_inputs = _non_finite_tensors(self)
            if not self._bad_inputs:
                raise ZooError(f"{self.operator.name}: output tensor {tensor!r} has non-finite values (inf or NaN) "
                               "although no input has any: a parameter (a lambda, weight or scale) is probably too "
                               "large; nothing was registered")
            seen = self.notes.setdefault("non_finite", {"inputs": self._bad_inputs, "outputs": []})
            if tensor not in seen["outputs"]:
                seen["outputs"].append(tensor)

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


def _non_finite_tensors(call: OperatorCall) -> list[str]:
    """'ref:tensor' of every floating-point input tensor holding inf or NaN."""
    import torch

    bad = []
    for i, (_, entry) in enumerate(call.inputs):
        ckpt = call.catalog.open(entry) if i not in call._open else call._open[i]
        for name in ckpt.names():
            t = ckpt.get(name)
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(f"{entry.ref}:{name}")
    return bad


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


def cached_entries(catalog: Catalog, key: str, out_name: str | None) -> list[ModelEntry] | None:
    """The entries a call with this cache key reuses instead of running: those of the newest
    recorded run with the key whose outputs still exist, provided its first output has the
    name asked for (any name when none is). `zoo build --dry-run` asks the same question."""
    hit = catalog.find_run(key)
    if hit is not None and (out_name is None or hit[1][0].name == out_name):
        return hit[1]
    return None


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
    run and its lineage in one transaction, and a reused run gives back all its entries.

    Before any work: the input roles are checked against the operator's declared inputs
    and the params validated. An input whose ref is a path (not a catalog reference) is
    hashed and registered in the same transaction as the outputs, so a failed run adds
    no row."""
    op = get_operator(name)
    op.check_inputs([parent.role for parent in inputs])
    p = params if isinstance(params, op.params) else op.validate(params if isinstance(params, dict) else None)
    if out_name is not None:
        check_name(out_name)  # an empty or invalid name is refused before any work
    staged: list[StagedInput] = []
    try:
        resolved = _resolve_inputs(catalog, inputs, staged)
        return _run(catalog, op, p, resolved, staged, out_name, tags=tags, reuse=reuse, progress=progress,
                    options=options)
    finally:
        for st in staged:  # registered with the outputs, or not used: either way nothing of it stays behind
            st.discard()


def _resolve_inputs(catalog: Catalog, inputs: Sequence[Parent],
                    staged: list[StagedInput]) -> list[tuple[Parent, ModelEntry]]:
    """Each input's entry: a catalog reference, or a path hashed now (`Catalog.stage`) whose
    staged entry is appended to `staged`, once per path."""
    by_path: dict[str, ModelEntry] = {}
    resolved = []
    for parent in inputs:
        try:
            entry = catalog.get(parent.ref)
        except NotFoundError:
            path = Path(parent.ref).expanduser() if isinstance(parent.ref, str) else None
            if path is None or not path.exists():
                raise
            where = str(path.resolve())
            if where not in by_path:
                got = catalog.stage(path)
                if isinstance(got, StagedInput):
                    staged.append(got)
                    got = got.entry
                by_path[where] = got
            entry = by_path[where]
        resolved.append((parent, entry))
    return resolved


def _run(catalog: Catalog, op: Operator, p: OperatorParams, resolved: list[tuple[Parent, ModelEntry]],
         staged: list[StagedInput], out_name: str | None, *, tags: Sequence[str], reuse: bool,
         progress: Callable[[int], None] | None, options: dict | None) -> RunResult:
    key = cache_key(op, p, resolved)
    if launched_processes() > 1:
        barrier()  # every process decides on the same catalog state: all reuse, or all run
    if reuse:
        hit = cached_entries(catalog, key, out_name)
        if hit is not None:
            return RunResult(hit, reused=True, seconds=0.0)
    out_name = out_name or f"{op.name.replace('.', '-')}-{key[:8]}"
    for _, entry in resolved:  # the digests recorded must be those of the bytes the operator reads
        catalog.check_unchanged(entry)
    call = OperatorCall(op, catalog, resolved, p, catalog.incoming_path(), out_name, progress, dict(options or {}))
    t0 = time.perf_counter()
    try:
        outputs = _outputs_of(call, op.fn(call))
    except BaseException:
        _discard(call.output_paths())
        raise
    seconds = time.perf_counter() - t0
    _discard(set(call.output_paths()) - {o.written.path for o in outputs})  # asked for but not returned
    _warn_non_finite(call)

    def register() -> list[ModelEntry]:
        return _register(catalog, op, p, key, seconds, outputs, call, tags, staged)

    if launched_processes() > 1:  # `accelerate launch` / torchrun: every rank ran it, rank 0 records it
        return _record_once(catalog, key, outputs, register, seconds, call.timings)
    return RunResult(register(), False, seconds, dict(call.timings))


def _warn_non_finite(call: OperatorCall) -> None:
    """One stderr line when inf/NaN came in with the inputs and went out with the output."""
    seen = call.notes.get("non_finite")
    if seen:
        inputs, outputs = seen["inputs"], seen["outputs"]
        print(f"warning: {call.operator.name}: the inputs hold non-finite values (inf or NaN) in {len(inputs)} "
              f"tensor(s) ({', '.join(inputs[:5])}{', ...' if len(inputs) > 5 else ''}); the output has them in "
              f"{', '.join(outputs[:5])}{', ...' if len(outputs) > 5 else ''}", file=sys.stderr)


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
            raise ZooError("the main process did not record the run (see its error)")
        entries = hit[1]
    return RunResult(entries, reused=False, seconds=seconds, timings=dict(timings))


def _register(catalog: Catalog, op: Operator, p: OperatorParams, key: str, seconds: float,
              outputs: list[OperatorOutput], call: OperatorCall, tags: Sequence[str],
              staged: Sequence[StagedInput] = ()) -> list[ModelEntry]:
    """Every output, the one run that made them, the inputs given as paths and the lineage:
    one transaction. Parents are named by entry id (or a staged input's key), so the edges
    point at the very entries the operator read."""
    notes = {**call.notes, **{k: v for o in outputs for k, v in (o.notes or {}).items()}}
    timings = {**call.timings, **({"notes": notes} if notes else {})}
    run = RunRecord(op.name, op.version, p.model_dump(mode="json"), cache_key=key, seconds=seconds,
                    timings=timings or None)
    new = []
    for o in outputs:
        target = call.output(o.name)
        new.append(NewEntry(o.written, target.name, tags=[*tags, *o.tags], metrics=o.metrics, detail=target.detail))
    keys = {id(st.entry): st.key for st in staged}
    parents = [Parent(e.id if e.id is not None else keys[id(e)], parent.role, parent.weight)
               for parent, e in call.recorded_inputs()]
    return catalog.register_many(new, run=run, inputs=parents, staged=staged)
