"""Merging on real data: two fine-tunes of a digits classifier on disjoint class subsets
merge into a model that beats each fine-tune on the union of their classes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import merging
from zoo import Checkpoint, save_tensors
from zoo.tasks.digits import read_digits


def _data():
    pixels, labels = read_digits()
    x = torch.tensor(pixels, dtype=torch.float32) / 16.0
    y = torch.tensor(labels)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def _train(model: nn.Module, x, y, steps: int, lr: float, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _accuracy(state: dict, x, y) -> float:
    model = _net()
    model.load_state_dict(state)
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_merged_finetunes_beat_each_finetune_on_the_union(tmp_path, catalog):
    (xtr, ytr), (xte, yte) = _data()
    torch.manual_seed(0)
    base = _train(_net(), xtr, ytr, steps=30, lr=0.05, seed=0)  # a weak generalist
    save_tensors(tmp_path / "base", base.state_dict())
    for name, classes in (("low", range(0, 5)), ("high", range(5, 10))):
        keep = torch.isin(ytr, torch.tensor(list(classes)))
        ft = _net()
        ft.load_state_dict(base.state_dict())
        _train(ft, xtr[keep], ytr[keep], steps=150, lr=0.05, seed=1)
        save_tensors(tmp_path / name, ft.state_dict())
    acc = {k: _accuracy({n: Checkpoint.open(tmp_path / k).get(n) for n in base.state_dict()}, xte, yte)
           for k in ("base", "low", "high")}
    for method, params in (("task_arithmetic", {"weights": [1.0, 1.0], "lambda": 0.6}),
                           ("ties", {"weights": [1.0, 1.0], "density": 0.7, "lambda": 1.0}),
                           ("widen", {})):
        ck = merging.merge(method, base=str(tmp_path / "base"), models=[str(tmp_path / "low"), str(tmp_path / "high")],
                           catalog=catalog, **params)
        merged = _accuracy({n: ck.get(n) for n in ck.names()}, xte, yte)
        assert merged > max(acc["low"], acc["high"]) + 0.05, (method, merged, acc)
