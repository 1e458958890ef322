"""`zoo reproduce` and `zoo lineage --recipe`: a recorded recipe re-run gives the catalogued
bytes (merges, expansions, stitched exports), a tampered input or a false record is caught,
and the recipe printed as a pipeline rebuilds the same entries in a fresh catalog."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest
import torch
import yaml

from zoo import Checkpoint, save_tensors
from zoo.registry import get_operator

from tests.helpers.models import expandable_model, perturbed_copy

pytestmark = pytest.mark.slow  # replays merges, expansions and training

LEMON = ["--hidden-size", "56", "--num-heads", "8", "--intermediate-size", "100", "--num-layers", "4"]


@pytest.fixture
def merged(run, tmp_path, llama_dir):
    """base, ft1, ft2 indexed in place and `mt`, their TIES merge: the catalog's digests."""
    perturbed_copy(llama_dir, tmp_path / "ft1", 0.01)
    perturbed_copy(llama_dir, tmp_path / "ft2", -0.02)
    for name, path in (("base", llama_dir), ("ft1", tmp_path / "ft1"), ("ft2", tmp_path / "ft2")):
        assert run("add", str(path), "--name", name)[0] == 0
    code, _, err = run("merge", "--method", "ties", "--base", "base", "--model", "ft1", "--model", "ft2",
                       "--set", "density=0.5", "--out", "mt")
    assert code == 0, err
    return tmp_path


def n_files(run, ref: str) -> int:
    return len(json.loads(run("show", ref, "--json")[1])["files"])


def digest(run, ref: str) -> str:
    code, out, _ = run("show", ref, "--json")
    assert code == 0
    return json.loads(out)["digest"]


def rows(run) -> list[str]:
    return [r["ref"] for r in json.loads(run("ls", "--json")[1])]


def test_ties_merge_reproduces_bit_for_bit_and_registers_nothing(run, merged):
    before, work = rows(run), merged / "work"
    work.mkdir()
    store = sorted(p.name for p in (merged / "store").iterdir())
    code, out, err = run("reproduce", "mt", "--work-dir", str(work))
    assert code == 0, err
    # weights, config, card and mergekit_config.yml
    assert out.splitlines() == [f"reproduced mt@1 bit for bit: {n_files(run, 'mt')} files, digest {digest(run, 'mt')}"]
    assert n_files(run, "mt") == 5
    assert rows(run) == before  # nothing registered
    assert list(work.iterdir()) == []  # the temporary replay is gone
    assert sorted(p.name for p in (merged / "store").iterdir()) == store


def test_a_false_record_is_caught_tensor_by_tensor(run, merged):
    """The run says density 0.9; the files were made with 0.5: exit 1, the tensors named."""
    with sqlite3.connect(merged / "cli.db") as db:
        (params,) = db.execute("SELECT params FROM runs WHERE operator = 'merge.ties'").fetchone()
        params = json.loads(params)
        params["parameters"]["density"] = 0.9
        db.execute("UPDATE runs SET params = ? WHERE operator = 'merge.ties'", (json.dumps(params),))
    work = merged / "work"
    work.mkdir()
    code, out, _ = run("reproduce", "mt", "--work-dir", str(work))
    lines = out.splitlines()
    assert code == 1 and list(work.iterdir()) == []
    assert lines[0].startswith("warning: mt@1: the run's cache key does not match")  # the record was edited
    assert lines[1].startswith("differs: mt@1 (merge.ties 1): digest ") and "tensors differ" in lines[1]
    tensors = [ln for ln in lines if ln.startswith("  tensor ")]
    assert 1 <= len(tensors) <= 5 and "max |a-b| = " in tensors[0]
    largest = [float(ln.rsplit("= ", 1)[1]) for ln in tensors]
    assert largest == sorted(largest, reverse=True) and largest[0] > 0
    code, out, _ = run("reproduce", "mt", "--json")
    (row,) = json.loads(out)
    assert code == 1 and row["status"] == "differs" and row["reproduced"] != row["digest"]


def test_tampered_input_is_refused_naming_file_and_entry(run, merged, llama_dir):
    weights = merged / "ft1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only a re-hash sees it
    weights.write_bytes(bytes(data))
    code, out, err = run("reproduce", "mt")
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: cannot reproduce mt@1:")
    assert str(weights) in err and "ft1@1" in err


def test_seeded_training_reports_the_largest_difference(run, merged, monkeypatch):
    """An operator declared non-deterministic reports differences instead of failing."""
    from zoo import registry

    ties = get_operator("merge.ties")
    monkeypatch.setitem(registry._OPERATORS, "merge.ties", replace(ties, deterministic=False))
    with sqlite3.connect(merged / "cli.db") as db:
        (params,) = db.execute("SELECT params FROM runs").fetchone()
        db.execute("UPDATE runs SET params = ?", (params.replace('"density": 0.5', '"density": 0.6'),))
    code, out, _ = run("reproduce", "mt")
    assert code == 0
    head = out.splitlines()[1]
    assert head.startswith("reproduced mt@1 approximately (merge.ties 1 is seeded training")
    assert "largest difference" in head and "tensors differ" in head


def test_another_operator_version_is_refused_unless_asked(run, merged, monkeypatch):
    from zoo import registry

    monkeypatch.setitem(registry._OPERATORS, "merge.ties", replace(get_operator("merge.ties"), version="2"))
    code, _, err = run("reproduce", "mt")
    assert code != 0 and err.count("\n") == 1 and "version 1" in err and "--any-version" in err
    code, out, _ = run("reproduce", "mt", "--any-version")
    assert code == 0 and out.startswith("warning: mt@1 was made by merge.ties version 1")
    assert "reproduced mt@1 bit for bit" in out


def test_an_added_model_has_nothing_to_reproduce(run, merged):
    code, _, err = run("reproduce", "base")
    assert code != 0 and err.count("\n") == 1 and "was not made by a recorded run" in err
    code, _, err = run("reproduce", "nope")
    assert code != 0 and err.count("\n") == 1
    code, out, err = run("lineage", "base", "--recipe")
    assert code != 0 and out == "" and err.count("\n") == 1 and "has no recipe" in err


def test_pipeline_out_names_the_output():
    from zoo.errors import ZooError
    from zoo.pipeline.spec import Pipeline, output_name

    pipe = Pipeline.from_dict({"name": "p", "steps": {"s": {"op": "merge.linear", "out": "mine"}, "t": {"op": "x"}}})
    assert output_name("p", pipe.steps["s"], 0) == "mine" and output_name("p", pipe.steps["t"], 0) == "p-t"
    for bad in ("", "  ", 3):
        with pytest.raises(ZooError, match="`out:`"):
            Pipeline.from_dict({"steps": {"s": {"op": "merge.linear", "out": bad}}})


def test_lemon_expansion_and_recursive_chain(run, merged):
    code, _, err = run("expand", "mt", *LEMON, "--out", "big")
    assert code == 0, err
    code, out, _ = run("reproduce", "big")
    assert code == 0 and out.splitlines() == [
        f"reproduced big@1 bit for bit: {n_files(run, 'big')} files, digest {digest(run, 'big')}"]
    code, out, _ = run("reproduce", "big", "--recursive", "--json")
    checks = json.loads(out)
    assert code == 0
    assert [(c["ref"], c["status"]) for c in checks] == [
        ("base@1", "root"), ("ft1@1", "root"), ("ft2@1", "root"), ("mt@1", "identical"), ("big@1", "identical")]
    assert [c["operator"] for c in checks[3:]] == ["merge.ties", "expand.lemon"]
    assert all(c["reproduced"] == c["digest"] == digest(run, c["ref"]) for c in checks[3:])
    # a tampered root stops the chain before anything is replayed
    weights = merged / "ft2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    code, out, err = run("reproduce", "big", "-r")
    assert code != 0 and out == "" and "root ft2@1" in err and str(weights) in err


def test_recipe_is_a_pipeline_that_rebuilds_the_same_bytes(run, merged, llama_dir, monkeypatch):
    """`zoo lineage --recipe` for a LEMON expansion of a merge, built in a fresh catalog that
    holds only the roots: the same digests as the original entries."""
    assert run("expand", "mt", *LEMON, "--out", "big")[0] == 0
    code, text, _ = run("lineage", "big", "--recipe")
    assert code == 0
    doc = yaml.safe_load(text)
    assert list(doc["steps"]) == ["mt", "big"]
    assert doc["steps"]["big"]["inputs"] == [{"ref": "mt", "role": "source"}]
    assert doc["steps"]["mt"]["inputs"] == [{"ref": "base@1", "role": "base"}, {"ref": "ft1@1", "role": "input"},
                                            {"ref": "ft2@1", "role": "input"}]
    want = {ref: digest(run, ref) for ref in ("mt", "big")}
    recipe = merged / "recipe.yaml"
    recipe.write_text(text)
    fresh = ["--catalog", str(merged / "fresh.db")]
    monkeypatch.setenv("ZOO_STORE", str(merged / "fresh-store"))
    for name, path in (("base", llama_dir), ("ft1", merged / "ft1"), ("ft2", merged / "ft2")):
        assert run(*fresh, "add", str(path), "--name", name)[0] == 0
    code, out, err = run(*fresh, "build", str(recipe), "--dry-run")
    assert code == 0, err
    assert "mt: merge.ties <- base@1, ft1@1, ft2@1" in out
    code, _, err = run(*fresh, "build", str(recipe))
    assert code == 0, err
    got = {ref: json.loads(run(*fresh, "show", ref, "--json")[1])["digest"] for ref in ("mt", "big")}
    assert got == want


@pytest.mark.slow
def test_stitched_export_reproduces(catalog):
    """SN-Net (seeded training) and one exported configuration, replayed from the roots."""
    from stitching import frontend
    from zoo.reproduce import reproduce
    from zoo.training import new_model

    anchors = [new_model(catalog, p, f"{p}-a", seed=i).entry.ref for i, p in enumerate(("vit-ti", "vit-s"))]
    frontend.build(catalog, anchors, "digits", "sn", steps=2, batch_size=16)
    _, configs = frontend.network(catalog, "sn")
    stitched = next(c for c in configs if c.kind != "anchor")
    exported = frontend.export(catalog, "sn", stitched.id).entry
    before = catalog.count()
    (check,) = reproduce(catalog, exported.ref)
    assert check.status == "identical" and check.deterministic
    assert check.reproduced == exported.digest == catalog.get(exported.ref).digest
    chain = reproduce(catalog, exported.ref, recursive=True)
    assert [(c.entry.ref, c.operator) for c in chain] == [
        ("vit-ti-a@1", "init.random"), ("vit-s-a@1", "init.random"), ("sn@1", "stitch.snnet"),
        (exported.ref, "stitch.export")]
    assert all(c.ok for c in chain) and not chain[2].deterministic
    assert catalog.count() == before


def test_tensor_differences_largest_first(tmp_path):
    """The comparison itself: bitwise equality, NaN against NaN, structure before values."""
    from zoo.reproduce import max_abs_diff, tensor_diffs

    a = {"w": torch.tensor([1.0, float("nan"), 3.0]), "b": torch.zeros(2), "gone": torch.ones(1),
         "shape": torch.ones(2), "same": torch.arange(4)}
    b = {"w": torch.tensor([1.0, float("nan"), 3.5]), "b": torch.tensor([0.0, 1e-3]), "new": torch.ones(1),
         "shape": torch.ones(3), "same": torch.arange(4)}
    have, made = (Checkpoint.open(save_tensors(tmp_path / k, t).path) for k, t in (("a", a), ("b", b)))
    diffs, n = tensor_diffs(have, made)
    assert n == 6
    assert [d.name for d in diffs] == ["gone", "new", "shape", "w", "b"]
    assert [d.max_abs for d in diffs[3:]] == [0.5, pytest.approx(1e-3)]
    assert max_abs_diff(torch.tensor([float("nan")]), torch.tensor([float("nan")])) is None
    assert max_abs_diff(torch.tensor([float("nan")]), torch.tensor([1.0])) == float("inf")
    assert max_abs_diff(torch.tensor([-0.0]), torch.tensor([0.0])) == 0.0  # other bits, same value
    assert max_abs_diff(torch.arange(3), torch.arange(3)) is None
