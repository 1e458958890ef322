"""Where the tensor math runs: `--device` specs, and tensors dealt out over several devices
(what `--device cuda` does on a multi-GPU machine) give the same model as one device, for
merges and for LEMON expansions."""
from __future__ import annotations

import pytest
import torch

import merging
import merging.engine
import zoo.devices
from zoo import Parent
from zoo.devices import resolve_devices, workers_for
from zoo.errors import ZooError
from zoo.runner import run_operator

from tests.helpers.models import perturbed_copy
from tests.helpers.models import expandable_model

CPU = torch.device("cpu")
TWO = [torch.device("cpu"), torch.device("cpu", 0)]  # two distinct devices that exist everywhere


def test_device_specs(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_devices("cpu") == [CPU] and resolve_devices("auto") == [CPU]
    with pytest.raises(ZooError, match="no CUDA GPU is available"):
        resolve_devices("cuda")
    with pytest.raises(ZooError, match="is not a device"):
        resolve_devices("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    gpus = [torch.device("cuda", i) for i in range(3)]
    assert resolve_devices("cuda") == gpus and resolve_devices("auto") == gpus
    assert resolve_devices("cuda:2, cuda:0,cuda:2") == [gpus[2], gpus[0]]
    with pytest.raises(ZooError, match="only 3 GPU"):
        resolve_devices("cuda:3")
    assert workers_for(gpus, 2) == 12 and workers_for([CPU], 2) == 2


class _Dealt(list):
    """A device list that remembers which device each tensor was dealt."""

    def __init__(self, devices, seen):
        super().__init__(devices)
        self.seen = seen

    def __getitem__(self, i):
        dev = super().__getitem__(i)
        self.seen.append(str(dev))
        return dev


@pytest.fixture
def two_devices(monkeypatch):
    """Every streaming operator sees two devices; returns the devices its tensors went to."""
    seen: list[str] = []
    monkeypatch.setattr(zoo.devices, "resolve_devices", lambda spec: _Dealt(TWO, seen))
    monkeypatch.setattr(merging.engine, "resolve_devices", lambda spec: _Dealt(TWO, seen))
    return seen


def test_a_merge_spread_over_devices_is_the_same_merge(catalog, llama_dir, tmp_path, request):
    a, b = perturbed_copy(llama_dir, tmp_path / "a", 0.01), perturbed_copy(llama_dir, tmp_path / "b", -0.02)
    kwargs = dict(base=str(llama_dir), models=[str(a), str(b)], catalog=catalog, density=0.5)
    one = merging.merge("dare_ties", out="one", **kwargs)
    seen = request.getfixturevalue("two_devices")
    two = merging.merge("dare_ties", out="two", reuse=False, **kwargs)
    assert set(seen) == {"cpu", "cpu:0"}
    assert one.names() == two.names() and all(torch.equal(one.get(n), two.get(n)) for n in one.names())


def test_an_expansion_spread_over_devices_is_the_same_lossless_model(catalog, tmp_path, request):
    model, target = expandable_model("llama")
    model.save_pretrained(tmp_path / "llama")
    src = catalog.add(tmp_path / "llama").entry
    one = catalog.open(run_operator(catalog, "expand.lemon", [Parent(src.id, "source")], target, "one").entry)
    seen = request.getfixturevalue("two_devices")
    two = catalog.open(run_operator(catalog, "expand.lemon", [Parent(src.id, "source")], target, "two",
                                    reuse=False, options={"device": "cuda"}).entry)
    assert set(seen) == {"cpu", "cpu:0"}
    assert all(torch.equal(one.get(n), two.get(n)) for n in one.names())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the GPU machine)")
def test_on_the_gpu_merges_and_expansions_match_the_cpu(catalog, llama_dir, tmp_path):
    a, b = perturbed_copy(llama_dir, tmp_path / "a", 0.01), perturbed_copy(llama_dir, tmp_path / "b", -0.02)
    kwargs = dict(base=str(llama_dir), models=[str(a), str(b)], catalog=catalog, density=0.5)
    cpu = merging.merge("ties", out="cpu", **kwargs)
    gpu = merging.merge("ties", out="gpu", reuse=False, device="cuda", **kwargs)
    for n in cpu.names():
        torch.testing.assert_close(gpu.get(n), cpu.get(n), rtol=1e-6, atol=1e-6)
    model, target = expandable_model("llama")
    model.save_pretrained(tmp_path / "llama")
    src = catalog.add(tmp_path / "llama").entry
    one = catalog.open(run_operator(catalog, "expand.lemon", [Parent(src.id, "source")], target, "one").entry)
    two = catalog.open(run_operator(catalog, "expand.lemon", [Parent(src.id, "source")], target, "two",
                                    reuse=False, options={"device": "cuda"}).entry)
    for n in one.names():
        torch.testing.assert_close(two.get(n), one.get(n), rtol=1e-6, atol=1e-6)
