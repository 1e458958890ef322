"""Streaming writer: Hub-style shards, metadata, loadable output, atomicity."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaForCausalLM

from zoo import Checkpoint, CheckpointWriter, TensorSpec, save_tensors
from zoo.errors import MismatchError, ZooError

from tests.helpers.models import tiny_llama


def test_sharded_output_with_index_and_metadata(tmp_path):
    model = tiny_llama()
    state = model.state_dict()
    out = save_tensors(tmp_path / "out", state, max_shard_size="30KB", config=model.config.to_dict(),
                       metadata={"operator": "test", "inputs": [1, 2]})
    names = [f.path for f in out.files]
    shards = [n for n in names if n.endswith(".safetensors")]
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in state.values())
    with safe_open(tmp_path / "out" / shards[0], framework="pt") as f:  # the reference reader agrees
        meta = f.metadata()
        assert meta["format"] == "pt"
        assert json.loads(meta["weightzoo"]) == {"inputs": [1, 2], "operator": "test"}
        for k in f.keys():
            assert torch.equal(f.get_tensor(k), state[k])
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    x = torch.randint(0, 96, (2, 7))
    assert torch.equal(reloaded(x).logits, model(x).logits)


def test_single_shard_is_model_safetensors(tmp_path):
    out = save_tensors(tmp_path / "o", {"a": torch.ones(3)})
    assert [f.path for f in out.files] == ["model.safetensors"]


def test_out_of_order_writes_and_dtype_cast(tmp_path):
    specs = [TensorSpec("a", (2, 3), "bfloat16"), TensorSpec("b", (4,), "float32"), TensorSpec("c", (), "int64")]
    a, b = torch.randn(2, 3), torch.randn(4)
    with CheckpointWriter(tmp_path / "o", specs) as w:
        w.write("c", torch.tensor(7))
        w.write("b", b)
        w.write("a", a)
    ck = Checkpoint.open(tmp_path / "o")
    assert torch.equal(ck.get("a"), a.to(torch.bfloat16)) and torch.equal(ck.get("b"), b)
    assert ck.get("c").item() == 7


def test_sha256_reported_matches_file(tmp_path):
    import hashlib

    out = save_tensors(tmp_path / "o", {"a": torch.randn(10)}, config={"x": 1})
    for f in out.files:
        assert f.sha256 == hashlib.sha256((tmp_path / "o" / f.path).read_bytes()).hexdigest()


def _leftovers(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


def test_failure_mid_write_leaves_nothing(tmp_path):
    specs = [TensorSpec("a", (3,), "float32"), TensorSpec("b", (3,), "float32")]
    with pytest.raises(RuntimeError):
        with CheckpointWriter(tmp_path / "o", specs) as w:
            w.write("a", torch.ones(3))
            raise RuntimeError("interrupted")
    assert _leftovers(tmp_path) == []


def test_missing_tensor_refused_and_nothing_left(tmp_path):
    specs = [TensorSpec("a", (3,), "float32"), TensorSpec("b", (3,), "float32")]
    with pytest.raises(ZooError, match="never written"):
        with CheckpointWriter(tmp_path / "o", specs) as w:
            w.write("a", torch.ones(3))
    assert _leftovers(tmp_path) == []


def test_wrong_shape_refused(tmp_path):
    with pytest.raises(MismatchError, match="planned"):
        with CheckpointWriter(tmp_path / "o", [TensorSpec("a", (3,), "float32")]) as w:
            w.write("a", torch.ones(4))
    assert _leftovers(tmp_path) == []


def test_existing_target_refused(tmp_path):
    (tmp_path / "o").mkdir()
    with pytest.raises(ZooError, match="already exists"):
        save_tensors(tmp_path / "o", {"a": torch.ones(1)})
