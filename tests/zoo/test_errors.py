"""User mistakes that used to end in "internal error": option and command typos, reference
typos, JSON of the wrong shape, names that are not UTF-8, oversized or alias-bomb YAML.
Each is one line `error: ...`, a non-zero exit and nothing registered."""
from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from tests.helpers.one_line import nothing_registered, one_line_error
from tests.helpers.safetensors_files import TWO, write


# ----- command-line typos ---------------------------------------------------------------
@pytest.mark.parametrize("args, needles", [
    (("ls", "--famliy", "x"), ("no such option --famliy", "did you mean --family?", "zoo ls --help")),
    (("merge", "--methd", "ties"), ("no such option --methd", "did you mean --method?")),
    (("lss",), ("no such command 'lss'", "did you mean ls?")),
    (("linage", "x"), ("did you mean lineage?",)),
    (("show",), ("missing argument 'ref'", "zoo show --help")),
    (("diff", "a", "b", "--top", "many"), ("invalid value for '--top'",)),
    (("ls", "--family"), ("'--family' requires an argument",)),
    (("ls", "--json=yes"), ("'--json' does not take a value",)),
])
def test_usage_mistakes_are_one_line(run, args, needles):
    code, out, err = run(*args)
    one_line_error(code, err, *needles)
    assert code == 2 and out == ""


def test_no_close_option_no_guess(run):
    line = one_line_error(*run("ls", "--zzzzzz")[::2], "no such option --zzzzzz")
    assert "did you mean" not in line


def test_reference_typo_suggests_the_name(run, tmp_path):
    write(tmp_path / "m.safetensors", TWO, bytes(16))
    assert run("add", str(tmp_path / "m.safetensors"), "--name", "llama")[0] == 0
    one_line_error(*run("show", "lama")[::2], "no model 'lama'", "did you mean llama?")
    one_line_error(*run("lineage", "llama-x@1")[::2], "did you mean llama?")
    assert "did you mean" not in one_line_error(*run("show", "qqqq")[::2], "no model 'qqqq'")


# ----- JSON of the wrong shape ---------------------------------------------------------
def _folder(tmp_path: Path, config: str | None) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    write(folder / "model.safetensors", TWO, bytes(16))
    if config is not None:
        (folder / "config.json").write_text(config)
    return folder


@pytest.mark.parametrize("config, needle", [("[1, 2]", "not a JSON list"), ("{oops", "not valid JSON"),
                                            ('"llama"', "not a JSON string")])
def test_bad_config_json(run, tmp_path, config, needle):
    """`zoo add` refuses (the config is part of the record); `zoo tensors` still lists the
    tensors, which are readable, with one warning line naming the file."""
    folder = _folder(tmp_path, config)
    cfg = str(folder / "config.json")
    one_line_error(*run("add", str(folder))[::2], cfg, needle)
    one_line_error(*run("add", str(folder), "--copy")[::2], cfg, needle)
    nothing_registered(run, tmp_path / "store")
    code, out, err = run("tensors", str(folder), "--json")
    assert code == 0 and [t["name"] for t in json.loads(out)] == ["a", "b"]
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and cfg in lines[0] and needle in lines[0]


def test_index_of_the_wrong_shape(run, tmp_path):
    folder = _folder(tmp_path, None)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ["model.safetensors"]}')
    one_line_error(*run("tensors", str(folder))[::2], "model.safetensors.index.json", "weight_map")


# ----- names that are not UTF-8 --------------------------------------------------------
needs_bytes_names = pytest.mark.skipif(os.name != "posix", reason="POSIX file names are bytes")


@needs_bytes_names
def test_non_utf8_folder_name(run, tmp_path):
    """Readable, so `zoo tensors` lists it; `zoo add` cannot record the path as text and
    says so in one line, naming it with the raw byte escaped."""
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xffname"))
    folder.mkdir()
    write(folder / "model.safetensors", TWO, bytes(16))
    code, out, err = run("tensors", str(folder), "--json")
    assert code == 0 and err == "" and len(json.loads(out)) == 2
    line = one_line_error(*run("add", str(folder))[::2], "not valid UTF-8", "rename it")
    assert "bad\\xffname" in line
    nothing_registered(run, tmp_path / "store")
    code, _, err = run("add", str(folder), "--copy", "--name", "renamed")  # the path is not recorded
    assert code == 0, err


@needs_bytes_names
def test_non_utf8_file_name_json_output(run, tmp_path):
    path = write(Path(os.fsdecode(bytes(tmp_path) + b"/w\xff.safetensors")), TWO, bytes(16))
    code, out, err = run("tensors", str(path), "--json")
    assert code == 0, err
    assert {row["file"] for row in json.loads(out)} == {"w\udcff.safetensors"}  # escaped, still JSON


@needs_bytes_names
@pytest.mark.parametrize("args", [("ls", "--name", "x\udcff"), ("show", "m\udcff"), ("tag", "m", "t\udcff")])
def test_non_utf8_arguments(run, tmp_path, args):
    assert run("add", str(write(tmp_path / "m.safetensors", TWO, bytes(16))))[0] == 0
    one_line_error(*run(*args)[::2], "not valid UTF-8")


# ----- YAML input limits ----------------------------------------------------------------
BOMB_PARAMS = """\
      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
      g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
      h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
      i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""  # 9^9 = 387 million strings once expanded, in under 500 bytes


def _refused_quickly(run, *args: str) -> str:
    """Run, and assert the refusal took under 2 s and under 50 MB of Python allocations."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        code, _, err = run(*args)
    finally:
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < 2, f"took {elapsed:.1f} s"
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MB"
    return one_line_error(code, err, "once its aliases are expanded")


def test_alias_bomb_pipeline_refused_fast(run, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\nsteps:\n  m:\n    op: merge.linear\n    inputs: [a, b]\n    params:\n" + BOMB_PARAMS)
    assert path.stat().st_size < 600
    assert str(path) in _refused_quickly(run, "build", str(path), "--dry-run")
    nothing_registered(run, tmp_path / "store")


def test_alias_bomb_merge_config_refused_fast(run, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("merge_method: linear\nmodels: [a, b]\nparameters:\n" + BOMB_PARAMS.replace("      ", "  "))
    assert str(path) in _refused_quickly(run, "merge", str(path), "--out", "m")
    nothing_registered(run, tmp_path / "store")


def test_alias_bomb_in_set_refused_fast(run):
    """`--set` values are YAML too: ten levels of ten aliases each is 10^10 numbers."""
    levels = ["&x0 [1,1,1,1,1,1,1,1,1,1]"] + [f"&x{i} [" + ",".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 10)]
    _refused_quickly(run, "merge", "--method", "linear", "--model", "a", "--model", "b",
                     "--set", "weights=[" + ",".join(levels) + "]", "--out", "m")


def test_recursive_alias_and_oversize_yaml_refused(run, tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("name: loop\nsteps:\n  m: &m {op: merge.linear, inputs: [a], params: {x: *m}}\n")
    one_line_error(*run("build", str(path), "--dry-run")[::2], str(path), "recursive alias")
    big = tmp_path / "big.yaml"
    big.write_text("name: big\nsteps: {}\n# " + "x" * (1024 * 1024) + "\n")
    one_line_error(*run("build", str(big), "--dry-run")[::2], str(big), "1 MiB limit")
    not_text = tmp_path / "bytes.yaml"
    not_text.write_bytes(b"name: \xff\n")
    one_line_error(*run("build", str(not_text), "--dry-run")[::2], str(not_text), "not UTF-8")
    nothing_registered(run, tmp_path / "store")


def test_ordinary_yaml_still_loads(tmp_path):
    """Anchors and merge keys used the ordinary way are fine."""
    from zoo.yaml_input import load_text

    doc = load_text("base: &b {density: 0.5, weight: 1}\nmodels:\n  - {<<: *b, weight: 2}\n  - *b\n", "t")
    assert doc["models"] == [{"density": 0.5, "weight": 2}, {"density": 0.5, "weight": 1}]


def test_model_card_alias_bomb_is_ignored_fast():
    """Cards come from the Hub: a bomb in the front matter yields no lineage, quickly."""
    from zoo.card import front_matter, read_card_recipe

    card = "---\nweightzoo:\n" + BOMB_PARAMS.replace("      ", "  ") + "---\n# card\n"
    start = time.perf_counter()
    assert front_matter(card) == {} and read_card_recipe(card) is None
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("weight, needle", [("nan", "not a finite number"), ("-inf", "not a finite number"),
                                            ("heavy", "not a number")])
def test_parent_weight_must_be_finite(run, tmp_path, weight, needle):
    assert run("add", str(write(tmp_path / "p.safetensors", TWO, bytes(16))), "--name", "p")[0] == 0
    child = write(tmp_path / "c.safetensors", TWO, bytes(8) + bytes([1]) * 8)
    one_line_error(*run("add", str(child), "--parent", f"p:base:{weight}")[::2], needle)
    code, out, _ = run("ls", "--json")
    assert [m["name"] for m in json.loads(out)] == ["p"]


@pytest.mark.parametrize("step, needle", [
    ("{op: merge.linear, inputs: 5}", "`inputs:` must be a list"),
    ("{op: merge.linear, params: [1]}", "`params:` must be a mapping"),
    ("{op: merge.linear, grid: [1]}", "`grid:` must be a mapping"),
    ("{op: [merge.linear]}", "`op:` must be an operator name"),
])
def test_pipeline_keys_of_the_wrong_shape(run, tmp_path, step, needle):
    path = tmp_path / "p.yaml"
    path.write_text(f"steps:\n  a: {step}\n")
    one_line_error(*run("build", str(path), "--dry-run")[::2], "step 'a'", needle)


@pytest.mark.parametrize("setting, needle", [("hidden_size=abc", "Field 'hidden_size' expected int"),
                                             ("hidden_size=[1]", "expected int, got list"),
                                             ("num_attention_heads=5", "not a multiple")])
def test_model_config_values_of_the_wrong_type(run, tmp_path, setting, needle):
    """Config fields given with `--set` reach transformers' typed configs: one line, no row."""
    one_line_error(*run("new", "llama-tiny", "--set", setting, "--out", "n")[::2], "llama config", needle)
    nothing_registered(run, tmp_path / "store")


def test_bare_zoo_prints_help_not_an_error(run):
    code, out, err = run()
    assert "Usage" in out and "error" not in err and code in (0, 2)


def test_export_to_a_place_that_cannot_be_written_is_one_line(run, tmp_path):
    path = write(tmp_path / "m.safetensors", TWO, bytes(16))
    assert run("add", str(path), "--name", "m")[0] == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run("export", "m", str(blocker / "sub"))
    one_line_error(code, err, "cannot write", str(blocker / "sub"))
    assert blocker.read_text() == "not a folder"
