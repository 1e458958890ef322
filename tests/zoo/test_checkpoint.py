"""Opening checkpoints: formats, lazy reads, and one-line errors on bad input."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from zoo import Checkpoint
from zoo.errors import CorruptCheckpointError, NotFoundError

from tests.helpers.models import tiny_llama


def test_hf_folder_names_shapes_without_loading(llama_dir):
    model = tiny_llama()
    ckpt = Checkpoint.open(llama_dir)
    state = model.state_dict()
    assert set(ckpt.names()) == set(state)
    for name, t in state.items():
        info = ckpt.info(name)
        assert info.shape == tuple(t.shape) and info.dtype == "float32"
    assert ckpt.num_params == sum(t.numel() for t in state.values())
    assert ckpt.config["model_type"] == "llama"
    assert "config.json" in ckpt.side_files and ckpt.weight_files == ["model.safetensors"]


def test_lazy_get_equals_state_dict(llama_dir):
    state = tiny_llama().state_dict()
    ckpt = Checkpoint.open(llama_dir)
    for name in ckpt.names():
        assert torch.equal(ckpt.get(name), state[name])


def test_sharded_folder_reads_every_shard(llama_sharded_dir):
    ckpt = Checkpoint.open(llama_sharded_dir)
    assert len(ckpt.weight_files) > 1
    state = tiny_llama(1).state_dict()
    assert set(ckpt.names()) == set(state)
    assert all(torch.equal(ckpt.get(n), state[n]) for n in ckpt.names())


def test_get_is_copy_on_write(llama_dir):
    ckpt = Checkpoint.open(llama_dir)
    name = ckpt.names()[0]
    before = ckpt.get(name).clone()
    ckpt.get(name).add_(1.0)  # must not touch the file
    assert torch.equal(Checkpoint.open(llama_dir).get(name), before)


def test_single_safetensors_file_bf16(tmp_path):
    t = {"a": torch.randn(3, 4).to(torch.bfloat16), "b": torch.arange(5)}
    save_file(t, tmp_path / "w.safetensors")
    ckpt = Checkpoint.open(tmp_path / "w.safetensors")
    assert ckpt.single_file and ckpt.dtype == "bfloat16"
    assert torch.equal(ckpt.get("a"), t["a"]) and torch.equal(ckpt.get("b"), t["b"])


def test_pickle_loaded_weights_only_and_flagged_for_conversion(tmp_path):
    state = tiny_llama().state_dict()
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    ckpt = Checkpoint.open(tmp_path / "w.pt")
    assert ckpt.needs_conversion
    assert all(torch.equal(ckpt.get(n), state[n]) for n in state)


class Evil:  # a pickled custom object must never be executed
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_arbitrary_objects_is_refused(tmp_path):
    torch.save({"w": torch.ones(2), "x": Evil()}, tmp_path / "evil.bin")
    with pytest.raises(CorruptCheckpointError, match="weights_only=True"):
        Checkpoint.open(tmp_path / "evil.bin")


def test_missing_path(tmp_path):
    with pytest.raises(NotFoundError, match="no such file or folder"):
        Checkpoint.open(tmp_path / "nope")


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(NotFoundError, match="no weights found"):
        Checkpoint.open(tmp_path)


def test_unsupported_file_type(tmp_path):
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(CorruptCheckpointError, match="unsupported weights file"):
        Checkpoint.open(tmp_path / "w.onnx")


def test_bad_header_json(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 16)
    with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
        Checkpoint.open(bad)


def test_header_length_past_end(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 5000) + b"{}")
    with pytest.raises(CorruptCheckpointError, match="runs past the end"):
        Checkpoint.open(bad)


def test_truncated_data(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"w": torch.randn(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        Checkpoint.open(path)


def test_tiny_file(tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"abc")
    with pytest.raises(CorruptCheckpointError, match="not a safetensors file"):
        Checkpoint.open(path)


def test_index_pointing_to_missing_shard(llama_sharded_dir):
    index = json.loads((llama_sharded_dir / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (llama_sharded_dir / shard).unlink()
    with pytest.raises(NotFoundError, match="missing"):
        Checkpoint.open(llama_sharded_dir)


@pytest.mark.parametrize("text, kind", [("[1, 2]", "list"), ("3", "number"), ("null", "null")])
def test_config_must_be_an_object(llama_dir, text, kind):
    """A config.json of the wrong JSON shape is a one-line error, not an AttributeError
    later; commands that can work without it ask `config_problem` instead."""
    (llama_dir / "config.json").write_text(text)
    ckpt = Checkpoint.open(llama_dir)  # the weights are still readable
    with pytest.raises(CorruptCheckpointError, match=f"config.json: expected a JSON object .* not a JSON {kind}"):
        ckpt.config
    assert "config.json" in ckpt.config_problem()
    assert len(ckpt.names()) > 0


def test_config_problem_none_when_fine(llama_dir, tmp_path):
    assert Checkpoint.open(llama_dir).config_problem() is None
    single = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, single)
    assert Checkpoint.open(single).config_problem() is None  # a single file has no config


@pytest.mark.parametrize("index", ['{"weight_map": ["a.safetensors"]}', '{"weight_map": {"w": 3}}', "[]"])
def test_index_of_the_wrong_shape(llama_sharded_dir, index):
    (llama_sharded_dir / "model.safetensors.index.json").write_text(index)
    with pytest.raises(CorruptCheckpointError, match="not a valid index file"):
        Checkpoint.open(llama_sharded_dir)
