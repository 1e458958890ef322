"""LoRA adapters as merge inputs: a PEFT adapter folder (adapter_config.json +
adapter_model.safetensors) applied to its model on the fly, tensor by tensor, as PEFT's
merge_and_unload would (W + scaling * B @ A, scaling = alpha / r, or alpha / sqrt(r) with
rsLoRA; per-module alpha from alpha_pattern; the transpose for fan_in_fan_out and
embeddings; modules_to_save replaced whole), without writing a merged copy.

In a run, an input with role `adapter` modifies the model input listed just before it;
mergekit's `model+lora` and `{model: ..., lora: ...}` references become that pair."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.checkpoint import Checkpoint
from zoo.errors import MismatchError, NotFoundError, ZooError

if TYPE_CHECKING:
    import torch

    from zoo.catalog import Catalog
    from zoo.runner import OperatorCall

ADAPTER_ROLE = "adapter"
PREFIX = "base_model.model."
_LORA = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?P<tail>\.weight|\.bias)?$")
_REFUSED_KEYS = ("lora_magnitude_vector", "lora_E", "hada_", "lokr_", "ia3_", "oft_", "boft_")


# ----- references: model+lora ---------------------------------------------------------------

def split_ref(catalog: Catalog | None, ref: Any) -> tuple[Any, str | None]:
    """`MODEL+ADAPTER` -> (MODEL, ADAPTER); anything else -> (ref, None). A reference that is
    itself a catalog entry or an existing path is never split."""
    if not isinstance(ref, str) or "+" not in ref or Path(ref).expanduser().exists():
        return ref, None
    if catalog is not None:
        try:
            catalog.get(ref)
            return ref, None
        except NotFoundError:
            pass
    parts = ref.split("+")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ZooError(f"cannot read {ref!r} as MODEL+ADAPTER (one '+' between a model and a LoRA adapter)")
    return parts[0].strip(), parts[1].strip()


# ----- the adapter ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """How an adapter changes one tensor of its model."""

    kind: str  # "lora" (W + scale * B @ A), "bias" (b + scale * lora_B.bias), "replace" (modules_to_save)
    a: str | None = None  # adapter tensor names
    b: str | None = None
    scale: float = 1.0
    transpose: bool = False  # delta = (B @ A).T: fan_in_fan_out Linear (GPT-2's Conv1D), or an embedding
    base_from: str | None = None  # W itself saved with the adapter (PEFT's save_embedding_layers), else the model's


class Adapter:
    """A PEFT LoRA adapter, checked: per model tensor name, its `Change`."""

    def __init__(self, ckpt: Checkpoint, label: str = "adapter"):
        config = ckpt.adapter_config
        if config is None:
            raise ZooError(f"{label} ({ckpt.path}) is not a PEFT adapter (needs adapter_config.json and "
                           "adapter_model.safetensors)")
        self.ckpt, self.config, self.label = ckpt, config, label
        self._check_config()
        self.changes: dict[str, Change] = self._plan()

    def _check_config(self) -> None:
        c, where = self.config, f"{self.label}: adapter_config.json"
        if str(c.get("peft_type", "")).upper() != "LORA":
            raise ZooError(f"{where}: peft_type {c.get('peft_type')!r} is not supported; only LoRA adapters are")
        if c.get("use_dora"):
            raise ZooError(f"{where}: DoRA adapters (use_dora) are not supported; merge it with PEFT first")
        if c.get("target_parameters"):
            raise ZooError(f"{where}: target_parameters (LoRA on bare parameters) is not supported")
        for key in ("r", "lora_alpha"):
            v = c.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ZooError(f"{where}: {key} must be a positive number, not {v!r}")
        for key in ("alpha_pattern", "rank_pattern"):
            if c.get(key) is not None and not isinstance(c.get(key), dict):
                raise ZooError(f"{where}: {key} must be a mapping of module pattern to number")

    def _alpha(self, module: str) -> float:
        """PEFT's per-module alpha: the first alpha_pattern key matching the module's name."""
        pattern = self.config.get("alpha_pattern") or {}
        for key in pattern:
            if re.match(rf"(.*\.)?({key})$", module):
                return float(pattern[key])
        return float(self.config["lora_alpha"])

    def scaling(self, module: str, rank: int) -> float:
        alpha = self._alpha(module)
        return alpha / math.sqrt(rank) if self.config.get("use_rslora") else alpha / rank

    def _plan(self) -> dict[str, Change]:
        names = self.ckpt.names()
        pairs: dict[str, dict[str, str]] = {}
        changes: dict[str, Change] = {}
        for name in names:
            if not name.startswith(PREFIX):
                raise ZooError(f"{self.label}: tensor {name!r} does not start with {PREFIX!r}; not a PEFT adapter "
                               "file this can apply")
            if any(k in name for k in _REFUSED_KEYS):
                raise ZooError(f"{self.label}: tensor {name!r} belongs to an adapter type other than plain LoRA "
                               "(DoRA, LoHa, LoKr, ...); not supported")
            local = name[len(PREFIX):]
            m = _LORA.match(local)
            if m is None:  # modules_to_save, or a saved base layer: the model's tensor, whole
                changes[local.replace(".base_layer.", ".")] = Change("replace", a=name)
                continue
            pairs.setdefault(m["module"], {})[m["kind"] + (m["tail"] or "")] = name
        fan_in_fan_out = bool(self.config.get("fan_in_fan_out"))

        def _saved(tensor: str) -> str | None:  # the base layer saved with the adapter, then changed by it
            ch = changes.pop(tensor, None)
            return ch.a if ch is not None else None
        for module, got in pairs.items():
            if "lora_A.weight" in got or "lora_B.weight" in got:
                a, b = got.get("lora_A.weight"), got.get("lora_B.weight")
                if a is None or b is None:
                    raise ZooError(f"{self.label}: module {module!r} has only one of lora_A / lora_B")
                rank = self.ckpt.info(a).shape[0]
                scale = self.scaling(module, rank)
                changes[f"{module}.weight"] = Change("lora", a, b, scale, fan_in_fan_out, _saved(f"{module}.weight"))
                if "lora_B.bias" in got:
                    changes[f"{module}.bias"] = Change("bias", b=got["lora_B.bias"], scale=scale,
                                                       base_from=_saved(f"{module}.bias"))
            elif "lora_embedding_A" in got and "lora_embedding_B" in got:
                a, b = got["lora_embedding_A"], got["lora_embedding_B"]
                rank = self.ckpt.info(a).shape[0]
                changes[f"{module}.weight"] = Change("lora", a, b, self.scaling(module, rank), True,
                                                     _saved(f"{module}.weight"))
            else:
                raise ZooError(f"{self.label}: module {module!r} has an incomplete LoRA pair ({', '.join(sorted(got))})")
        return changes

    def check_against(self, model: Checkpoint, model_label: str) -> None:
        """Every tensor the adapter changes is in the model, with the shape the adapter makes."""
        for name, ch in self.changes.items():
            if name not in model.tensors:
                raise MismatchError(f"{self.label} changes {name!r}, which {model_label} does not have: the adapter "
                                    f"was made for another model (its base: {self.config.get('base_model_name_or_path')!r})")
            shape = model.info(name).shape
            if ch.kind == "replace":
                made = self.ckpt.info(ch.a).shape
            elif ch.kind == "bias":
                made = self.ckpt.info(ch.b).shape
            else:
                (r_a, n_in), (n_out, r_b) = self.ckpt.info(ch.a).shape, self.ckpt.info(ch.b).shape
                if r_a != r_b:
                    raise MismatchError(f"{self.label}: {name}: lora_A has rank {r_a}, lora_B {r_b}")
                made = (n_in, n_out) if ch.transpose else (n_out, n_in)
            if tuple(made) != tuple(shape):
                raise MismatchError(f"{self.label} makes {name} of shape {list(made)}, but {model_label} has "
                                    f"{list(shape)}: the adapter was made for another model")


class AdaptedCheckpoint:
    """A checkpoint with an adapter applied as its tensors are read: the engine reads it as it
    reads any checkpoint (`read(name, start, count)`), nothing merged is written anywhere.
    Changed tensors come back in float32 (float64 for float64 models): W + delta unrounded."""

    _KEEP = 4  # lora_A matrices kept between chunks (a few tensors are merged at once)

    def __init__(self, model: Checkpoint, adapter: Adapter, model_label: str = "the model"):
        import threading

        adapter.check_against(model, model_label)
        self.model, self.adapter = model, adapter
        self._a: dict[tuple[str, Any], torch.Tensor] = {}
        self._lock = threading.Lock()

    def _lora_a(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """lora_A of a tensor (r x in: small), read once for all of its chunks."""
        key = (name, dtype)
        with self._lock:
            got = self._a.get(key)
        if got is None:
            ch = self.adapter.changes[name]
            got = self.adapter.ckpt.read(ch.a).to(dtype).view(self.adapter.ckpt.info(ch.a).shape)
            with self._lock:
                self._a[key] = got
                while len(self._a) > self._KEEP:
                    self._a.pop(next(iter(self._a)))
        return got

    def __getattr__(self, attr: str) -> Any:  # names, info, tensors, config, root, side_files, path, ...
        return getattr(self.model, attr)

    def get(self, name: str) -> torch.Tensor:
        if name not in self.adapter.changes:
            return self.model.get(name)
        return self.read(name).view(self.model.info(name).shape)

    def read(self, name: str, start: int = 0, count: int | None = None) -> torch.Tensor:
        import torch

        ch = self.adapter.changes.get(name)
        if ch is None:
            return self.model.read(name, start, count)
        info = self.model.info(name)
        count = info.numel - start if count is None else count
        src = self.adapter.ckpt
        if ch.kind == "replace":
            return src.read(ch.a, start, count)
        dtype = torch.float64 if info.dtype == "float64" else torch.float32
        w = (lambda s, c: src.read(ch.base_from, s, c)) if ch.base_from else \
            (lambda s, c: self.model.read(name, s, c))
        if ch.kind == "bias":
            base = w(start, count).to(dtype)
            return base + src.read(ch.b, start, count).to(dtype) * ch.scale
        row = info.numel // info.shape[0]
        r0, r1 = start // row, -(-(start + count) // row)
        rows = w(r0 * row, (r1 - r0) * row).to(dtype).view(r1 - r0, row)
        a_shape, b_shape = src.info(ch.a).shape, src.info(ch.b).shape
        if ch.transpose:  # delta = (B @ A).T: its rows r0:r1 are A[:, r0:r1].T @ B.T
            rank, cols = a_shape
            a = torch.stack([src.read(ch.a, k * cols + r0, r1 - r0) for k in range(rank)]).to(dtype)
            b = src.read(ch.b).to(dtype).view(b_shape)
            delta = _low_rank_product(a.T, b.T) * ch.scale
        else:  # delta rows r0:r1 = B[r0:r1] @ A
            rank = b_shape[1]
            b = src.read(ch.b, r0 * rank, (r1 - r0) * rank).to(dtype).view(r1 - r0, rank)
            delta = _low_rank_product(b, self._lora_a(name, dtype)) * ch.scale
        flat = (rows + delta).reshape(-1)
        return flat[start - r0 * row: start - r0 * row + count].clone()


def _low_rank_product(left: "torch.Tensor", right: "torch.Tensor") -> "torch.Tensor":
    """left (m, r) @ right (r, n), a rank-r term at a time, each product and sum rounded
    alone: every row comes out the same whatever rows are read with it (a BLAS matmul picks
    its kernel and summation order by shape, so a chunk's rows could differ from the whole
    tensor's in the last bit on some CPUs)."""
    out = left[:, :1] * right[:1]
    for k in range(1, left.shape[1]):
        out.add_(left[:, k:k + 1] * right[k:k + 1])
    return out


# ----- a run's inputs with their adapters -----------------------------------------------------

def adapted_inputs(call: OperatorCall) -> list[tuple[str, Checkpoint | AdaptedCheckpoint]]:
    """(role, checkpoint) for each model input of a run, in order, each `adapter` input
    applied to the model input just before it."""
    out: list[tuple[str, Any]] = []
    labels: list[str] = []
    for i, (parent, entry) in enumerate(call.inputs):
        ckpt = call.checkpoint(i)
        if parent.role != ADAPTER_ROLE:
            if ckpt.adapter_config is not None:
                raise ZooError(f"{entry.ref} is a LoRA adapter, not a model: give it with the model it modifies, "
                               f"as MODEL+{entry.ref} (or {{model: MODEL, lora: {entry.ref}}} in YAML)")
            out.append((parent.role, ckpt))
            labels.append(entry.ref)
            continue
        if not out:
            raise ZooError(f"adapter {entry.ref} comes before any model; an adapter modifies the model listed before it")
        role, model = out[-1]
        if isinstance(model, AdaptedCheckpoint):
            raise ZooError(f"{labels[-1]} has two adapters; apply one adapter per model input")
        out[-1] = (role, AdaptedCheckpoint(model, Adapter(ckpt, f"adapter {entry.ref}"), labels[-1]))
    return out


def mergekit_ref(value: Any, where: str) -> str:
    """A model reference of mergekit's YAML as text: 'MODEL', or 'MODEL+ADAPTER' for its
    LoRA forms 'model+lora' and {model: MODEL, lora: ADAPTER} (each a string or {path: ...})."""
    if isinstance(value, dict) and "model" in value:  # mergekit's long form {model: ..., lora: ...}
        extra = set(value) - {"model", "lora", "override_architecture"}
        if extra:
            raise ZooError(f"{where}: unknown key(s) {', '.join(sorted(map(str, extra)))} in a model reference "
                           "(it takes model and lora)")
        if value.get("override_architecture"):
            raise ZooError(f"{where}: override_architecture is not supported; the model's config.json says what "
                           "it is")
        model = _path(value["model"], f"{where}.model")
        lora = _path(value["lora"], f"{where}.lora") if value.get("lora") is not None else None
        if "+" in model and not Path(model).exists():
            raise ZooError(f"{where}: give the model and its adapter either as 'model+lora' or as "
                           "{model: ..., lora: ...}, not both")
        return f"{model}+{lora}" if lora else model
    return _path(value, where)


def _path(value: Any, where: str) -> str:
    """One model path of mergekit's YAML: a string, or {path: ...} (a Hub revision is refused)."""
    if isinstance(value, dict) and "path" in value:
        if value.get("revision"):
            raise ZooError(f"{where}: a Hub revision ({value['revision']!r}) is not supported; pull that revision "
                           "with `zoo pull` and name the catalog entry")
        value = value["path"]
    if not isinstance(value, str) or not value:
        raise ZooError(f"{where}: model reference must be a name, name@N, id or path, not {value!r}")
    if value.count("+") > 1 and not Path(value).exists():
        raise ZooError(f"{where}: cannot read {value!r} as MODEL+ADAPTER (one '+' between a model and a LoRA adapter)")
    return value
