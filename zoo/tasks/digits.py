"""`digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 images), a fixed
60/20/20 train/val/test split, accuracy. `digits:0-4` or `digits:1,3,7` keep a class
subset (labels stay 0-9). `digits:permN` keeps all ten classes with labels relabelled
through a fixed permutation (`torch.randperm(10)` seeded with N): digit d gets label
perm[d], in every split, batch, loss and metric."""
from __future__ import annotations

import gzip
import importlib.util
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..determinism import reproducible_method
from ..errors import ZooError
from .registry import register_task
from .base import Task, device_of

SPLIT_SEED = 0
VARIANTS = "digits, digits:0-4, digits:1,3,7 or digits:permN (labels permuted with seed N)"


def digits_file() -> Path:
    """scikit-learn's own copy of the digits (`sklearn/datasets/data/digits.csv.gz`), found
    without importing scikit-learn: importing it (SciPy, pandas) costs ~1.6 s a process, far
    more than reading the 1,797 rows."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ZooError("the digits task reads scikit-learn's bundled data: pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise ZooError(f"{path}: scikit-learn's digits data is missing; reinstall scikit-learn")
    return path


@lru_cache(maxsize=1)
def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """(pixels N x 64 in 0..16 as float64, labels N) in the file's order: what
    `sklearn.datasets.load_digits()` returns as `data` and `target`. Read-only: they are
    cached and shared."""
    with gzip.open(digits_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",")
    pixels, labels = table[:, :-1], table[:, -1].astype(int)
    pixels.flags.writeable = labels.flags.writeable = False
    return pixels, labels


@lru_cache(maxsize=1)
def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(images N x 1 x 8 x 8 in [-1, 1], labels N), in a fixed shuffled order."""
    pixels, labels = read_digits()
    x = torch.tensor(pixels.reshape(-1, 8, 8), dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    y = torch.tensor(labels, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return x[perm], y[perm]


def label_permutation(seed: int) -> torch.Tensor:
    """perm[d] = the label of digit d in `digits:perm{seed}`."""
    return torch.randperm(10, generator=torch.Generator().manual_seed(seed))


def parse_classes(variant: str | None) -> tuple[int, ...]:
    if not variant:
        return tuple(range(10))
    classes: set[int] = set()
    try:
        for part in variant.split(","):
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-"))
                classes.update(range(lo, hi + 1))
            else:
                classes.add(int(part))
    except ValueError:
        raise ZooError(f"digits:{variant}: unknown variant; use {VARIANTS}") from None
    if not classes or min(classes) < 0 or max(classes) > 9:
        raise ZooError(f"digits:{variant}: classes must be within 0-9")
    return tuple(sorted(classes))


class Digits(Task):
    modality = "vision"
    primary = "accuracy"

    def __init__(self, variant: str | None = None):
        self.permutation: torch.Tensor | None = None  # digit -> label (None: labels are digits)
        m = re.fullmatch(r"perm(\d+)", variant or "")
        if m:
            self.classes = tuple(range(10))
            self.permutation = label_permutation(int(m.group(1)))
        elif variant and variant.startswith("perm"):
            raise ZooError(f"digits:{variant}: unknown variant; use {VARIANTS}")
        else:
            self.classes = parse_classes(variant)
        self.name = "digits" if variant is None else f"digits:{variant}"

    @property
    def labels(self) -> tuple[int, ...]:
        """The labels this task's examples carry (its classes, permuted where it permutes)."""
        if self.permutation is None:
            return self.classes
        return tuple(sorted(self.permutation[list(self.classes)].tolist()))

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = load_digits()
        n = len(y)
        bounds = {"train": (0, int(0.6 * n)), "val": (int(0.6 * n), int(0.8 * n)), "test": (int(0.8 * n), n)}
        if which not in bounds:
            raise ZooError(f"unknown split {which!r} (train, val, test)")
        lo, hi = bounds[which]
        x, y = x[lo:hi], y[lo:hi]
        keep = torch.isin(y, torch.tensor(self.classes))
        x, y = x[keep], y[keep]
        return (x, y) if self.permutation is None else (x, self.permutation[y])

    def support(self, k: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """k random training examples of each of the task's labels, grouped by label in
        ascending order: {"pixel_values": [k * labels, 1, 8, 8], "labels": [k * labels]}
        (the dataset sample a dataset-conditioned generator encodes)."""
        x, y = self.split("train")
        picks = []
        for label in self.labels:
            rows = (y == label).nonzero().flatten()
            if not 0 < k <= len(rows):
                raise ZooError(f"{self.name}: support needs 1 to {len(rows)} examples per class, not {k}")
            picks.append(rows[torch.randperm(len(rows), generator=generator)[:k]])
        idx = torch.cat(picks)
        return {"pixel_values": x[idx], "labels": y[idx]}

    def check(self, family, config: dict) -> None:
        super().check(family, config)
        if config.get("num_labels", len(config.get("id2label") or {}) or 10) < 10:
            raise ZooError(f"{self.name}: the model has fewer than 10 labels")

    @staticmethod
    def fit(x: torch.Tensor, config: dict) -> torch.Tensor:
        """Resize 8x8 grey images to the model's image size and channels."""
        size, ch = config.get("image_size", 8), config.get("num_channels", 1)
        if size != 8:
            x = F.interpolate(x, size=(size, size), mode="nearest")
        return x.expand(-1, ch, -1, -1) if ch != 1 else x

    def train_examples(self) -> int:
        return len(self.split("train")[1])

    def train_batches(self, config: dict, batch_size: int, generator: torch.Generator) -> Iterator[dict[str, Any]]:
        x, y = self.split("train")
        x = self.fit(x, config)
        while True:
            idx = torch.randint(0, len(y), (batch_size,), generator=generator)
            yield {"pixel_values": x[idx], "labels": y[idx]}

    def loss(self, model, batch: dict[str, Any]) -> torch.Tensor:
        logits = model(pixel_values=batch["pixel_values"]).logits
        return F.cross_entropy(logits, batch["labels"])

    @reproducible_method
    @torch.no_grad()
    def evaluate(self, model, config: dict, split: str = "test") -> dict[str, float]:
        x, y = self.split(split)
        dev = device_of(model)
        logits = torch.cat([model(pixel_values=self.fit(x[i : i + 256], config).to(dev)).logits.float().cpu()
                            for i in range(0, len(y), 256)])
        return {"accuracy": (logits.argmax(-1) == y).float().mean().item(),
                "loss": F.cross_entropy(logits, y).item()}


register_task("digits", Digits)
