"""Safetensors headers are read as strictly as the format is written
(https://github.com/huggingface/safetensors#format): each header below is crafted by hand
to break exactly one rule, and `zoo tensors` and `zoo add` must both refuse it with one
line naming the file and the problem, registering nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zoo import Checkpoint
from zoo.errors import CorruptCheckpointError

from tests.helpers.one_line import nothing_registered, one_line_error
from tests.helpers.safetensors_files import TWO, write
from tests.helpers.safetensors_files import entry as _t  # short: the table below is wide


# name -> (header, data bytes, what the one line must say)
BAD = {
    "overlap": ({"a": _t("F32", [2], [0, 8]), "b": _t("F32", [2], [4, 12])}, 12, "overlap"),
    "same bytes twice": ({"a": _t("F32", [2], [0, 8]), "b": _t("F32", [2], [0, 8])}, 8, "overlap"),
    "negative offset": ({"a": _t("F32", [2], [-8, 0])}, 8, "non-negative integers"),
    "float offsets": ({"a": _t("F32", [2], [0.0, 8.0])}, 8, "non-negative integers"),
    "string offsets": ({"a": _t("F32", [2], ["0", "8"])}, 8, "non-negative integers"),
    "boolean offset": ({"a": _t("U8", [1], [False, True])}, 1, "non-negative integers"),
    "three offsets": ({"a": _t("F32", [2], [0, 8, 8])}, 8, "non-negative integers"),
    "end before begin": ({"a": _t("F32", [0], [8, 0])}, 8, "end before they begin"),
    "gap between tensors": ({"a": _t("F32", [2], [0, 8]), "b": _t("F32", [2], [12, 20])}, 20, "gap of 4"),
    "gap before the first": ({"a": _t("F32", [2], [4, 12])}, 12, "gap of 4"),
    "bytes after the last": (TWO, 20, "4 bytes after the last tensor"),
    "nested metadata": ({**TWO, "__metadata__": {"format": {"nested": "x"}}}, 16, "flat map of strings"),
    "metadata list": ({**TWO, "__metadata__": ["format", "pt"]}, 16, "not a JSON list"),
    "metadata number": ({**TWO, "__metadata__": {"epoch": 3}}, 16, "holds a JSON number"),
    "unknown dtype": ({"a": _t("F31", [2], [0, 8])}, 8, "unknown dtype 'F31'"),
    "shape of floats": ({"a": _t("F32", [2.0], [0, 8])}, 8, "shape must be a list of non-negative integers"),
    "negative dimension": ({"a": _t("F32", [-2], [0, 8])}, 8, "shape must be"),
    "size does not match shape": ({"a": _t("F32", [3], [0, 8])}, 8, "do not match shape"),
    "entry not an object": ({"a": [0, 8]}, 8, "expected an object"),
    "missing data_offsets": ({"a": {"dtype": "F32", "shape": [2]}}, 8, "missing data_offsets"),
    "tensor data past the end": (TWO, 12, "truncated"),
    "header not an object": ([1, 2], 0, "not a JSON object"),
}


def _bad_file(tmp_path: Path, case: str) -> Path:
    header, nbytes, _ = BAD[case]
    return write(tmp_path / "bad.safetensors", header, bytes(nbytes))


@pytest.mark.parametrize("case", list(BAD))
def test_bad_header_refused_by_tensors_and_add(run, tmp_path, case):
    path = _bad_file(tmp_path, case)
    needle = BAD[case][2]
    code, out, err = run("tensors", str(path))
    line = one_line_error(code, err, str(path), needle)
    assert out == "", "nothing listed for a file that is refused"
    code, _, err = run("add", str(path))
    assert one_line_error(code, err, str(path), needle) == line
    nothing_registered(run, tmp_path / "store")


def test_duplicate_key_refused(run, tmp_path):
    raw = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, ' \
          b'"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}'
    path = write(tmp_path / "dup.safetensors", None, bytes(16), raw_header=raw)
    one_line_error(*run("add", str(path))[::2], str(path), "'a' appears twice")
    nothing_registered(run)


def test_lone_surrogate_tensor_name_refused(run, tmp_path):
    raw = b'{"w\\udcff": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}'
    path = write(tmp_path / "sur.safetensors", None, bytes(1), raw_header=raw)
    one_line_error(*run("tensors", str(path))[::2], str(path), "not valid UTF-8")


def test_header_length_past_the_end_refused(run, tmp_path):
    path = write(tmp_path / "long.safetensors", TWO, bytes(16), length=10_000)
    one_line_error(*run("tensors", str(path))[::2], str(path), "runs past the end")
    one_line_error(*run("add", str(path))[::2], str(path), "runs past the end")
    nothing_registered(run)


def test_bad_shard_in_a_folder_is_named(run, tmp_path):
    folder = tmp_path / "sharded"
    folder.mkdir()
    write(folder / "model-00001-of-00002.safetensors", TWO, bytes(16))
    bad = write(folder / "model-00002-of-00002.safetensors", {"c": _t("F32", [2], [0, 8]),
                                                              "d": _t("F32", [2], [4, 12])}, bytes(12))
    code, _, err = run("add", str(folder), "--copy")
    one_line_error(code, err, str(bad), "overlap")
    nothing_registered(run, tmp_path / "store")


def test_what_the_format_allows_is_accepted(tmp_path):
    """Strict, not stricter: header padding (the reference writer's), zero-size tensors,
    JSON keys in another order than the data, flat metadata, and every known dtype."""
    state = {"z_last_in_json": torch.arange(6, dtype=torch.int64).reshape(2, 3), "empty": torch.zeros(0, 4),
             "half": torch.ones(3, dtype=torch.float16), "b": torch.tensor([True, False])}
    path = tmp_path / "lib.safetensors"
    save_file(state, path, metadata={"format": "pt", "note": "x"})
    ckpt = Checkpoint.open(path)
    assert ckpt.metadata == {"format": "pt", "note": "x"}
    for name, tensor in state.items():
        assert torch.equal(ckpt.get(name), tensor)
    # the data of "b" first, "a" second, while the JSON lists "a" first
    hand = write(tmp_path / "order.safetensors", {"a": _t("U8", [2], [2, 4]), "b": _t("U8", [2], [0, 2])},
                 bytes([1, 2, 3, 4]))
    ckpt = Checkpoint.open(hand)
    assert ckpt.get("a").tolist() == [3, 4] and ckpt.get("b").tolist() == [1, 2]
    empty = write(tmp_path / "none.safetensors", {"__metadata__": {"k": "v"}}, b"")
    assert Checkpoint.open(empty).names() == []


def test_refusal_is_a_corrupt_checkpoint_error(tmp_path):
    """The library API raises the same one-line error type the CLI prints."""
    with pytest.raises(CorruptCheckpointError, match="overlap"):
        Checkpoint.open(_bad_file(tmp_path, "overlap"))
