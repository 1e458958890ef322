"""`zoo reproduce`: re-run the recorded recipe of a catalog entry and compare with its files.

A recorded run names its operator, version, params and inputs (by id and digest). Replaying
it means: check that every input still has the bytes recorded (re-hashed, not trusted), run
the operator function exactly as the runner would, but into a temporary folder that is never
registered and always removed, and compare the result with the entry's catalogued files.
Deterministic operators (merges, expansions, exports) must give the same digest; seeded
training operators (`Operator.deterministic = False`) report how far each tensor moved.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from .catalog import Catalog, ModelEntry, Parent
from .catalog.tables import Run
from .errors import NotFoundError, ZooError
from .hashing import combined_digest
from .registry import Operator, OperatorParams, get_operator
from .runner import OperatorCall, OperatorOutput, OutputTarget, cache_key
from .writer import WrittenCheckpoint

SHOWN = 5  # differing tensors or files listed in the report (the largest first)
Inputs = list[tuple[Parent, ModelEntry]]  # (how it was given, the entry) per input of a run


@dataclass
class TensorDiff:
    """One tensor that is not bitwise identical: its largest absolute difference, or a
    structural problem (missing, other shape or dtype) that no tolerance excuses."""

    name: str
    max_abs: float | None = None
    problem: str | None = None

    def line(self) -> str:
        return f"  tensor {self.name}: {self.problem or f'max |a-b| = {self.max_abs:.3g}'}"


@dataclass
class Check:
    """The outcome for one entry: a root checked by digest, or a replayed run compared."""

    entry: ModelEntry
    operator: str | None = None  # None: a root (no producing run), checked by digest only
    version: str | None = None
    deterministic: bool = True
    reproduced: str | None = None  # the digest of the replayed output
    files: int = 0
    file_diffs: list[str] = field(default_factory=list)
    tensor_diffs: list[TensorDiff] = field(default_factory=list)
    tensors: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.operator is None or self.reproduced == self.entry.digest

    @property
    def ok(self) -> bool:
        """Bit for bit, or (seeded training) the same tensors with values that may differ."""
        if self.identical:
            return True
        structural = any(d.problem for d in self.tensor_diffs)
        return not self.deterministic and not structural and self.tensors > 0

    @property
    def status(self) -> str:
        if self.operator is None:
            return "root"
        return "identical" if self.identical else "close" if self.ok else "differs"

    def lines(self) -> list[str]:
        """The human report: one headline, then the largest differences."""
        ref, what = self.entry.ref, f"{self.operator} {self.version}"
        head = [f"warning: {w}" for w in self.warnings]
        if self.operator is None:
            return head + [f"root {ref}: {self.files} files match their catalogued digests"]
        if self.identical:
            return head + [f"reproduced {ref} bit for bit: {self.files} files, digest {self.entry.digest}"]
        shown = [d.line() for d in self.tensor_diffs[:SHOWN]]
        more = len(self.tensor_diffs) - len(shown)
        shown += [f"  ... and {more} more tensors"] if more > 0 else []
        if not self.tensor_diffs:
            shown += [f"  file {f}: differs" for f in self.file_diffs[:SHOWN]]
        if self.ok:
            top = self.tensor_diffs[0] if self.tensor_diffs else None
            largest = f"largest difference {top.max_abs:.3g} in {top.name}" if top else "tensors identical"
            return head + [f"reproduced {ref} approximately ({what} is seeded training, not bit for bit): "
                           f"{largest}; {len(self.tensor_diffs)} of {self.tensors} tensors differ"] + shown
        why = (f"{len(self.tensor_diffs)} of {self.tensors} tensors differ" if self.tensor_diffs
               else f"tensors identical, {len(self.file_diffs)} file(s) differ")
        headline = f"differs: {ref} ({what}): digest {self.reproduced}, catalogued {self.entry.digest}; {why}"
        return head + [headline] + shown

    def row(self) -> dict:
        """The `--json` item."""
        return {"ref": self.entry.ref, "status": self.status, "operator": self.operator, "version": self.version,
                "deterministic": self.deterministic, "digest": self.entry.digest, "reproduced": self.reproduced,
                "files": self.files, "tensors": self.tensors, "differing_files": self.file_diffs,
                "differing_tensors": [{"name": d.name, "max_abs": d.max_abs, "problem": d.problem}
                                      for d in self.tensor_diffs],
                "warnings": self.warnings}


# ----- what a run was called with ---------------------------------------------------------
@dataclass
class Recipe:
    """A recorded run, made ready to replay: the operator, its validated params, and the
    inputs exactly as the operator was called with them."""

    run: Run
    operator: Operator
    params: OperatorParams
    inputs: Inputs
    warnings: list[str] = field(default_factory=list)

    @property
    def stated(self) -> "AsRecorded":
        """The params as the run recorded them: what the replay's cards and metadata state."""
        return AsRecorded(self.run.params or {})


@dataclass(frozen=True)
class AsRecorded:
    """Params as a run recorded them (its `model_dump`). A params model that gained a field
    since (with a default that keeps the old behaviour) validates to the same computation,
    but would state the new field in the card; a replay states what the run stated."""

    dump: dict

    def model_dump(self, mode: str = "python") -> dict:
        return copy.deepcopy(self.dump)


def recipe_of(catalog: Catalog, entry: ModelEntry, run: Run, *, any_version: bool = False) -> Recipe:
    """The run that made `entry`, as a call to replay; one line if it cannot be replayed
    faithfully (operator not installed, another operator version, params no longer valid,
    an input no longer catalogued under the digest recorded)."""
    where = f"cannot reproduce {entry.ref}"
    try:
        op = get_operator(run.operator)
    except ZooError as e:
        raise ZooError(f"{where}: {e}") from None
    warnings = []
    if op.version != run.operator_version:
        msg = (f"{entry.ref} was made by {op.name} version {run.operator_version}; this installation has "
               f"version {op.version}, which may compute other values")
        if not any_version:
            raise ZooError(f"{where}: {msg} (add --any-version to compare anyway)")
        warnings.append(msg)
    try:
        params = op.validate(run.params)
    except ZooError as e:
        raise ZooError(f"{where}: its recorded params are no longer valid ({e})") from None
    recorded = recorded_inputs(catalog, entry, run)
    inputs = _as_called(op, run, recorded)
    if inputs is None:
        inputs = recorded
        warnings.append(f"{entry.ref}: the run's cache key does not match its recorded operator, params and inputs "
                        "(an edited record, or a release with another cache key); replaying them as recorded")
    return Recipe(run, op, params, inputs, warnings)


def recorded_inputs(catalog: Catalog, entry: ModelEntry, run: Run) -> Inputs:
    """The run's recorded inputs as (parent, entry), each still catalogued under the digest
    the run recorded; one line naming the first that is not."""
    recorded = []
    for item in run.inputs or []:
        try:
            parent_entry = catalog.get(int(item["id"]))
        except NotFoundError:
            raise ZooError(f"cannot reproduce {entry.ref}: its input {item.get('ref')} (id {item['id']}) is no "
                           "longer in the catalog") from None
        if parent_entry.digest != item.get("digest"):
            raise ZooError(f"cannot reproduce {entry.ref}: its input {item.get('ref')} is no longer catalogued "
                           f"with the digest recorded ({item.get('digest')})")
        recorded.append((Parent(parent_entry.id, item.get("role") or "input", item.get("weight")), parent_entry))
    return recorded


def _as_called(op: Operator, run: Run, recorded: Inputs) -> Inputs | None:
    """The inputs the operator was called with. The run records its lineage, which an
    operator that chooses among its inputs rewrites (a greedy soup marks rejected models
    `candidate`, a lambda search records the weights it chose); the cache key, computed
    from the inputs as called, tells which reading is right."""
    plain = [(Parent(p.ref, p.role if p.role == "base" else op.default_role), e) for p, e in recorded]
    as_run = replace(op, version=run.operator_version)
    for candidate in (recorded, plain):
        if run.cache_key is None or cache_key(as_run, AsRecorded(run.params or {}), candidate) == run.cache_key:
            return candidate
    return None


def call_inputs(catalog: Catalog, entry: ModelEntry, run: Run) -> Inputs:
    """The inputs `run` was called with (for recipes written as pipelines); the recorded
    ones when the operator is not installed here."""
    recorded = recorded_inputs(catalog, entry, run)
    try:
        op = get_operator(run.operator)
    except ZooError:
        return recorded
    return _as_called(op, run, recorded) or recorded


# ----- checking bytes ---------------------------------------------------------------------
def check_files(catalog: Catalog, entry: ModelEntry, target: ModelEntry, role: str = "input") -> int:
    """Re-hash an entry's files against the catalog; one line naming the first changed file
    and the entry being reproduced. Returns the number of files."""
    problems = catalog.verify(entry)[0].problems
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ZooError(f"cannot reproduce {target.ref}: {role} {entry.ref}: {problems[0]}{more}; its bytes are no "
                       "longer the ones recorded (restore them, or `zoo add` them again as a new version)")
    return len(catalog.files_of(entry))


# ----- replaying ----------------------------------------------------------------------------
class _Stated:
    """The call as a replayed output's card and metadata see it: the operator version and
    params the run recorded, the rest delegated to the call."""

    def __init__(self, call: "_ReplayCall") -> None:
        self._call, self.params = call, call.stated
        self.operator = replace(call.operator, version=call.stated_version or call.operator.version)

    def __getattr__(self, name: str):
        return getattr(self._call, name)


@dataclass
class _ReplayCall(OperatorCall):
    """An operator call whose every output, the call's own and any `new_output`, lands in
    the replay's temporary folder instead of the store, stating the recorded params."""

    stated: AsRecorded | None = None
    stated_version: str | None = None

    def _target(self, name: str, path: Path, *args) -> OutputTarget:
        return OutputTarget(_Stated(self), name, path, *args)  # type: ignore[arg-type]

    def new_output(self, name: str, *, detail: dict | None = None, summary: str = "",
                   library: str | None = "transformers") -> OutputTarget:
        if name in self._outputs:
            raise ValueError(f"{self.operator.name}: two outputs named {name!r}")
        path = self.target if name == self.out_name else self.target.parent / f"output-{len(self._outputs) + 1}"
        self._outputs[name] = self._target(name, path, detail, summary, library)
        return self._outputs[name]

    def output(self, name: str | None = None) -> OutputTarget:
        key = self.out_name if name is None else name
        if key in self._outputs:
            return self._outputs[key]
        if key == self.out_name:
            return self._target(self.out_name, self.target)
        return super().output(name)


def replay(catalog: Catalog, recipe: Recipe, out_name: str, folder: Path, *,
           device: str = "cpu") -> dict[str, WrittenCheckpoint]:
    """Run the recipe's operator into `folder` (nothing is registered); its outputs by name."""
    call = _ReplayCall(recipe.operator, catalog, list(recipe.inputs), recipe.params, folder / "output", out_name,
                       options={"device": device}, stated=recipe.stated, stated_version=recipe.run.operator_version)
    result = recipe.operator.fn(call)
    outputs: Sequence[OperatorOutput] = [result] if isinstance(result, OperatorOutput) else list(result)
    return {o.name or out_name: o.written for o in outputs}


def _out_name(entry: ModelEntry, run: Run) -> str:
    """The name the run gave its own output: the entry's, or the first output's (several)."""
    outputs = run.outputs or []
    if len(outputs) > 1:
        first = str(outputs[0].get("ref", "")).rsplit("@", 1)[0]
        return first or entry.name
    return entry.name


# ----- comparing ----------------------------------------------------------------------------
def compare(catalog: Catalog, entry: ModelEntry, written: WrittenCheckpoint, check: Check) -> Check:
    """Fill `check` with the replayed digest and, when it differs, what differs."""
    check.reproduced = combined_digest((f.path, f.sha256) for f in written.files)
    catalogued = {f.path: f.sha256 for f in catalog.files_of(entry)}
    check.files = len(catalogued)
    if check.identical:
        return check
    made = {f.path: f.sha256 for f in written.files}
    check.file_diffs = sorted(p for p in set(catalogued) | set(made) if catalogued.get(p) != made.get(p))
    problems = catalog.verify(entry)[0].problems
    if problems:
        check.warnings.append(f"{entry.ref}'s own files changed on disk ({problems[0]}); tensors compared with them")
    from .checkpoint import Checkpoint

    check.tensor_diffs, check.tensors = tensor_diffs(catalog.open(entry), Checkpoint.open(written.path))
    return check


def tensor_diffs(have, made) -> tuple[list[TensorDiff], int]:
    """Every tensor of two checkpoints that is not bitwise identical, the largest
    differences first (structural problems before them); and how many names were compared."""
    names = sorted(set(have.names()) | set(made.names()))
    diffs = []
    for name in names:
        if name not in made.tensors:
            diffs.append(TensorDiff(name, problem="missing from the reproduction"))
        elif name not in have.tensors:
            diffs.append(TensorDiff(name, problem="not in the catalogued model"))
        else:
            a, b = have.info(name), made.info(name)
            if (a.shape, a.dtype) != (b.shape, b.dtype):
                diffs.append(TensorDiff(name, problem=f"{a.dtype} {list(a.shape)} catalogued, "
                                                      f"{b.dtype} {list(b.shape)} reproduced"))
                continue
            biggest = max_abs_diff(have.get(name), made.get(name))
            if biggest is not None:
                diffs.append(TensorDiff(name, biggest))
    diffs.sort(key=lambda d: (d.problem is None, -(d.max_abs or 0.0), d.name))
    return diffs, len(names)


def max_abs_diff(a, b) -> float | None:
    """None when bitwise identical; else max |a - b| (NaN against NaN counts as equal, NaN
    against a number as infinitely far)."""
    import torch

    if torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)):
        return None
    if a.is_complex():
        a, b = torch.view_as_real(a), torch.view_as_real(b)
    if a.is_floating_point():
        x, y = a.to(torch.float64), b.to(torch.float64)
        same = (x == y) | (torch.isnan(x) & torch.isnan(y))
        d = torch.where(same, 0.0, (x - y).abs().nan_to_num(nan=float("inf")))
    else:
        d = (a.to(torch.int64) - b.to(torch.int64)).abs().to(torch.float64)
    return float(d.max()) if d.numel() else 0.0


# ----- the whole command ----------------------------------------------------------------------
def ancestry(catalog: Catalog, entry: ModelEntry) -> list[tuple[ModelEntry, Run | None]]:
    """`entry` and every ancestor reached through producing runs, parents before children
    (roots, entries no run produced, first)."""
    order: list[tuple[ModelEntry, Run | None]] = []
    done: set[int] = set()
    stack: list[tuple[ModelEntry, bool]] = [(entry, False)]
    runs: dict[int, Run | None] = {}
    while stack:
        node, expanded = stack.pop()
        if node.id in done:
            continue
        if node.id not in runs:
            runs[node.id] = catalog.producing_run(node)
        run = runs[node.id]
        if expanded or run is None:
            done.add(node.id)
            order.append((node, run))
            continue
        stack.append((node, True))
        for item in reversed(run.inputs or []):
            try:
                parent = catalog.get(int(item["id"]))
            except NotFoundError:
                raise ZooError(f"cannot reproduce {node.ref}: its input {item.get('ref')} is no longer in the "
                               "catalog") from None
            if parent.id not in done:
                stack.append((parent, False))
    return order


def reproduce(catalog: Catalog, ref: str | int | ModelEntry, *, recursive: bool = False, any_version: bool = False,
              device: str = "cpu", work_dir: str | Path | None = None,
              log: Callable[[str], None] = lambda msg: None) -> list[Check]:
    """Replay the run that made `ref` (with `recursive`, every run of its ancestry, roots
    checked by digest) and compare each result with the catalogued entry. Nothing is
    registered; the temporary folders are removed. Raises a one-line ZooError when a recipe
    cannot be replayed faithfully (an input's bytes changed, another operator version, ...)."""
    entry = catalog.get(ref)
    plan = ancestry(catalog, entry) if recursive else [(entry, catalog.producing_run(entry))]
    if not recursive and plan[0][1] is None:
        raise ZooError(f"{entry.ref} was not made by a recorded run (it was added); nothing to reproduce "
                       "(`zoo verify` checks its digest)")
    hashed: set[int] = set()
    checks = []
    for node, run in plan:
        if run is None:
            checks.append(Check(node, files=check_files(catalog, node, entry, role="root")))
            hashed.add(node.id)
            continue
        recipe = recipe_of(catalog, node, run, any_version=any_version)
        for _, parent in recipe.inputs:
            if parent.id not in hashed:
                check_files(catalog, parent, node)
                hashed.add(parent.id)
        sources = ", ".join(e.ref for _, e in recipe.inputs) or "no inputs"
        log(f"replaying {node.ref}: {recipe.operator.name} on {sources} ...")
        check = Check(node, recipe.operator.name, recipe.operator.version, recipe.operator.deterministic,
                      warnings=list(recipe.warnings))
        folder = Path(tempfile.mkdtemp(prefix="zoo-reproduce-", dir=work_dir))
        try:
            outputs = replay(catalog, recipe, _out_name(node, run), folder, device=device)
            if node.name not in outputs:
                raise ZooError(f"cannot reproduce {node.ref}: the replayed run made {', '.join(sorted(outputs))}, "
                               f"not {node.name}")
            checks.append(compare(catalog, node, outputs[node.name], check))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return checks
