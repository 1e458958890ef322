"""The runner with several outputs per run: one run record, every output registered in one
transaction (all or nothing), each with its own card and provenance metadata, cache hits
returning them all, and the launched-processes path recording them once."""
from __future__ import annotations

import json
import re

import pytest
import torch

from zoo.card import read_card_recipe
from zoo.catalog import Parent
from zoo.errors import ZooError
from zoo.registry import InputSpec, Operator, OperatorParams, register
from zoo.runner import OperatorCall, OperatorOutput, run_operator


class SplitParams(OperatorParams):
    parts: list[str] = ["a", "b", "c"]
    scale: float = 1.0


def _split(call: OperatorCall) -> list[OperatorOutput]:
    """One output per part: the input's weight scaled by (index + 1) * scale."""
    p: SplitParams = call.params
    weight = call.checkpoint(0).get("w")
    outputs = []
    for i, part in enumerate(p.parts):
        target = call.new_output(f"split-{part}", detail={"part": part}, library=None)
        written = target.write_tensors({"w": weight * (i + 1) * p.scale})
        outputs.append(OperatorOutput(written, metrics={"index": i}, name=target.name, tags=[f"part={part}"],
                                      notes={"parts": len(p.parts)}))
    call.timings["split"] = 0.5
    return outputs


register(Operator("test.split", "1", SplitParams, _split, "one model per part", relation="adapter",
                  default_role="source", inputs=(InputSpec("source"),), outputs=lambda p: len(p.parts)))


class ScaleParams(OperatorParams):
    factor: float = 1.0
    dtype: str = "float32"


def _scale(call: OperatorCall) -> OperatorOutput:
    """Every tensor of the source times `factor`, computed in float64 and stored in `dtype`."""
    ckpt = call.checkpoint(0)
    tensors = {n: (ckpt.get(n).double() * call.params.factor).to(getattr(torch, call.params.dtype))
               for n in ckpt.names()}
    return OperatorOutput(call.write_tensors(tensors))


register(Operator("test.scale", "1", ScaleParams, _scale, "scale every tensor", default_role="source",
                  inputs=(InputSpec("source"),)))


@pytest.fixture
def source(catalog, tmp_path):
    from zoo import save_tensors

    save_tensors(tmp_path / "src", {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)})
    return catalog.add(tmp_path / "src", "src").entry


def _leftovers(catalog) -> list[str]:
    """Folders in the store that no entry owns (half-written or unregistered outputs)."""
    owned = {str(e.path) for e in (catalog.get(r["id"]) for r in catalog.ls())}
    found = [p for p in catalog.store.rglob("*") if p.is_dir() and (p.name.startswith(".") or p.name.startswith("v"))]
    return [str(p) for p in found if str(p) not in owned]


def test_several_outputs_one_run_each_with_card_metadata_and_lineage(catalog, source):
    result = run_operator(catalog, "test.split", [Parent(source.id, "source")], {}, tags=["demo"])
    assert [e.name for e in result.entries] == ["split-a", "split-b", "split-c"] and result.entry is result.entries[0]
    assert not result.reused and result.timings == {"split": 0.5}
    runs = catalog.runs()
    assert len(runs) == 1 and catalog.count() == 4
    run = runs[0]
    assert run.operator == "test.split" and run.cache_key and run.timings == {"split": 0.5, "notes": {"parts": 3}}
    assert [o["id"] for o in run.outputs] == [e.id for e in result.entries]
    assert [o["detail"] for o in run.outputs] == [{"part": "a"}, {"part": "b"}, {"part": "c"}]
    for i, entry in enumerate(result.entries):
        part = "abc"[i]
        assert catalog.tags_of(entry) == ["demo", f"part={part}"] and entry.metrics == {"index": i}
        assert [(e.role, m.id, e.run_id) for e, m in catalog.parents(entry)] == [("source", source.id, run.id)]
        assert catalog.producing_run(entry).id == run.id
        ckpt = catalog.open(entry)
        torch.testing.assert_close(ckpt.get("w"), torch.arange(6.0).reshape(2, 3) * (i + 1))
        card = (ckpt.root / "README.md").read_text()
        assert f"# split-{part}" in card and "base_model_relation: adapter" in card
        assert read_card_recipe(card)["inputs"][0]["ref"] == source.ref
        meta = json.loads(ckpt.metadata["weightzoo"])
        assert meta["operator"] == "test.split" and meta["output"] == {"part": part}
        assert meta["inputs"] == [{"ref": source.ref, "digest": source.digest, "role": "source"}]
    assert _leftovers(catalog) == []


def test_a_cache_hit_returns_every_output(catalog, source):
    first = run_operator(catalog, "test.split", [Parent(source.id, "source")], {"scale": 2.0})
    again = run_operator(catalog, "test.split", [Parent(source.id, "source")], {"scale": 2.0})
    assert again.reused and [e.id for e in again.entries] == [e.id for e in first.entries]
    assert len(catalog.runs()) == 1 and catalog.count() == 4
    other = run_operator(catalog, "test.split", [Parent(source.id, "source")], {"scale": 3.0})
    assert not other.reused and [e.version for e in other.entries] == [2, 2, 2]


def test_registration_is_all_or_nothing(catalog, source, monkeypatch):
    """The second output fails inside the transaction: no model, run or edge is added, and
    no output folder is left in the store."""
    import zoo.catalog.catalog as catalog_module

    real, calls = catalog_module._listing, []

    def failing(entry, tags):
        calls.append(entry.name)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(entry, tags)

    monkeypatch.setattr(catalog_module, "_listing", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        run_operator(catalog, "test.split", [Parent(source.id, "source")], {})
    assert calls == ["split-a", "split-b"]
    assert catalog.count() == 1 and catalog.runs() == [] and catalog.children(source) == []
    assert _leftovers(catalog) == []
    monkeypatch.setattr(catalog_module, "_listing", real)
    assert len(run_operator(catalog, "test.split", [Parent(source.id, "source")], {}).entries) == 3


def test_bad_outputs_register_nothing(catalog, source):
    with pytest.raises(ValueError, match="two outputs named"):
        run_operator(catalog, "test.split", [Parent(source.id, "source")], {"parts": ["a", "a"]})
    with pytest.raises(Exception, match="invalid model name"):
        run_operator(catalog, "test.split", [Parent(source.id, "source")], {"parts": ["a", "b@2"]})
    assert catalog.count() == 1 and catalog.runs() == [] and _leftovers(catalog) == []


def test_launched_processes_record_every_output_once(catalog, source, monkeypatch):
    """Under a launcher every rank runs the operator; the main rank registers all outputs,
    the others drop their copies and return the recorded entries."""
    import zoo.runner as runner

    monkeypatch.setattr(runner, "launched_processes", lambda: 2)
    monkeypatch.setattr(runner, "barrier", lambda: None)
    monkeypatch.setattr(runner, "on_main_process", lambda fn, others=None: fn())
    main = run_operator(catalog, "test.split", [Parent(source.id, "source")], {})

    def other_rank(fn, others=None):
        others()
        return None

    monkeypatch.setattr(runner, "on_main_process", other_rank)
    other = run_operator(catalog, "test.split", [Parent(source.id, "source")], {}, reuse=False)
    assert [e.id for e in other.entries] == [e.id for e in main.entries] and not other.reused
    assert len(catalog.runs()) == 1 and catalog.count() == 4 and _leftovers(catalog) == []


# ----- the builders that used to bypass the runner -----------------------------------------
@pytest.mark.slow
def test_demo_entries_have_cards_cache_keys_and_lineage(catalog):
    from zoo.demo import build_demo_zoo

    made = build_demo_zoo(catalog, steps=4, log=lambda _: None)
    assert [e.name for e in made] == ["demo-llama", "demo-llama-email", "demo-llama-asyncio", "demo-llama-ties"]
    operators = ["demo.pretrain", "demo.finetune", "demo.finetune", "merge.ties"]
    for entry, op in zip(made, operators):
        run = catalog.producing_run(entry)
        assert run.operator == op and run.cache_key and catalog.tags_of(entry) == ["demo"]
        recipe = read_card_recipe((catalog.open(entry).root / "README.md").read_text())
        assert recipe["operator"] == op
    assert [p.ref for _, p in catalog.parents(made[1])] == ["demo-llama@1"]
    assert catalog.producing_run(made[0]).params["config"]["hidden_size"] == 64
    again = build_demo_zoo(catalog, steps=4, log=lambda _: None)  # the same demo: every step cached
    assert [e.id for e in again] == [e.id for e in made] and catalog.count() == 4


@pytest.mark.slow
def test_several_outputs_in_two_launched_processes(tmp_path):
    """torchrun, 2 CPU processes: one run and its outputs recorded once; both ranks get them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from zoo import Catalog

    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    script = Path(__file__).parents[1] / "scripts" / "runner_ddp.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1 and len(r0["ids"]) == 3 and r0["reused"] == [False, True] and r0["again"] == r0["ids"]
    catalog = Catalog(tmp_path / "catalog.db", store=tmp_path / "store")
    assert catalog.count() == 4 and len(catalog.runs()) == 1 and _leftovers(catalog) == []


# ----- outputs with inf/NaN ----------------------------------------------------------------
def _visible(catalog) -> list[str]:
    """Everything in the store a user would see (hidden temporaries aside)."""
    return sorted(str(p.relative_to(catalog.store)) for p in catalog.store.rglob("*")
                  if not any(part.startswith(".") for part in p.relative_to(catalog.store).parts))


@pytest.mark.parametrize("factor, dtype", [(1e308, "float64"), (1e300, "float32"), (1e6, "float16")])
def test_a_non_finite_output_is_refused_when_no_input_had_any(catalog, source, factor, dtype):
    """The source holds 0..5: 5e308 overflows float64, 5e300 float32, 5e6 float16 (max 65504)."""
    before = _visible(catalog)
    with pytest.raises(ZooError) as e:
        run_operator(catalog, "test.scale", [Parent(source.id, "source")], {"factor": factor, "dtype": dtype})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("test.scale: output tensor 'w' has non-finite values") and "too large" in msg
    assert catalog.count() == 1 and catalog.runs() == [] and _visible(catalog) == before and _leftovers(catalog) == []


def test_non_finite_inputs_pass_through_with_a_warning_naming_them(catalog, tmp_path, capsys):
    from zoo import save_tensors

    save_tensors(tmp_path / "nan", {"w": torch.tensor([1.0, float("nan")]), "ok": torch.ones(2)})
    bad = catalog.add(tmp_path / "nan", "has-nan").entry
    out = run_operator(catalog, "test.scale", [Parent(bad.id, "source")], {"factor": 2.0}).entry
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: test.scale: the inputs hold non-finite values")
    assert "has-nan@1:w" in err and "ok" not in err.replace("tensor(s)", "")
    assert catalog.producing_run(out).timings["notes"]["non_finite"] == {"inputs": ["has-nan@1:w"], "outputs": ["w"]}
    assert torch.isnan(catalog.open(out).get("w")[1])


def test_inputs_are_checked_against_the_contract_before_any_work(catalog, source, monkeypatch):
    import zoo.runner as runner

    monkeypatch.setattr(runner, "cache_key", lambda *a: pytest.fail("work started"))
    with pytest.raises(ZooError, match=r"^test.scale takes exactly 1 model\(s\) with role 'source', got 2 "
                                       r"\(it takes: exactly 1 'source'\)$"):
        run_operator(catalog, "test.scale", [Parent(source.id, "source")] * 2, {})
    with pytest.raises(ZooError, match=r"^test.scale takes no model with role 'base', got 1"):
        run_operator(catalog, "test.scale", [Parent(source.id, "base")], {})
    with pytest.raises(ZooError, match=r"got 0"):  # checked before the refs are resolved
        run_operator(catalog, "test.scale", [], {})
    assert catalog.count() == 1 and catalog.runs() == []


# ----- inputs given as paths: registered with the output, or not at all ----------------------
@pytest.fixture
def shapes(tmp_path):
    """ft1 and ft2 share names and shapes; other-shape has a wider `w`."""
    from zoo import save_tensors

    save_tensors(tmp_path / "ft1", {"w": torch.zeros(2, 3), "b": torch.zeros(3)})
    save_tensors(tmp_path / "ft2", {"w": torch.ones(2, 3), "b": torch.ones(3)})
    save_tensors(tmp_path / "other-shape", {"w": torch.ones(2, 5), "b": torch.ones(3)})
    return tmp_path


def _rows(run) -> list[str]:
    return [r["ref"] for r in json.loads(run("ls", "--json")[1])]


@pytest.mark.parametrize("extra, message", [
    (["--model", "other-shape"], "tensor w has shape [2, 5] in model 2 (other-shape) but [2, 3]"),
    (["--model", "ft2", "--set", "densty=0.5"], "unknown parameter 'densty'"),
    (["--model", "ft2", "--model", "missing"], "no model 'missing'"),
])
def test_a_failed_merge_registers_none_of_its_path_inputs(run, shapes, monkeypatch, extra, message):
    monkeypatch.chdir(shapes)
    assert run("add", "ft1", "--name", "kept")[0] == 0  # one catalogued input, the others given as paths
    code, out, err = run("merge", "--method", "linear", "--model", "kept", *extra, "--out", "m")
    assert code != 0 and err.count("\n") == 1 and message in err, err
    assert _rows(run) == ["kept@1"] and not (shapes / "store" / "m").exists()


def test_path_inputs_land_with_the_output_in_one_transaction(run, shapes, monkeypatch):
    monkeypatch.chdir(shapes)
    code, out, err = run("merge", "--method", "linear", "--model", "ft1", "--model", "./ft2", "--out", "m")
    assert code == 0, err
    assert sorted(_rows(run)) == ["ft1@1", "ft2@1", "m@1"]
    lineage = json.loads(run("show", "m", "--json")[1])
    assert sorted(p["parent"] for p in lineage["parents"]) == ["ft1@1", "ft2@1"]
    code, out, err = run("merge", "--method", "linear", "--model", "ft1", "--model", "./ft2", "--out", "m")
    assert code == 0 and sorted(_rows(run)) == ["ft1@1", "ft2@1", "m@1"]  # the same merge again: cached, no new rows


@pytest.mark.parametrize("args, needle", [
    (["--set", "lambda=.inf"], "lambda"),  # refused as a parameter (or else as the output it makes)
    (["--weight", "1e300"], "weight"),  # 1e300 x (ones - zeros) would overflow float32
    # > 65504 in both tensors: the first in the checkpoint's order is named, whichever thread
    # found its overflow first
    (["--weight", "1e6", "--out-dtype", "float16"], r"output tensor 'w' has non-finite values"),
])
def test_a_merge_that_would_write_inf_is_refused(run, shapes, monkeypatch, args, needle):
    monkeypatch.chdir(shapes)
    code, out, err = run("merge", "--method", "task_arithmetic", "--base", "ft1", "--model", "ft2", *args, "--out", "m")
    assert code != 0 and err.count("\n") == 1 and err.startswith("error: merge.task_arithmetic: "), err
    assert re.search(needle, err), err
    assert _rows(run) == [] and not (shapes / "store" / "m").exists()
    visible = [p for p in (shapes / "store").rglob("*") if not p.name.startswith(".")] if (shapes / "store").exists() else []
    assert visible == []


def test_a_merge_of_an_input_with_nan_warns_naming_the_tensor(run, shapes, monkeypatch):
    from zoo import save_tensors

    monkeypatch.chdir(shapes)
    save_tensors(shapes / "nan", {"w": torch.full((2, 3), float("nan")), "b": torch.ones(3)})
    code, out, err = run("merge", "--method", "linear", "--model", "ft1", "--model", "nan", "--out", "m")
    assert code == 0 and "merged m@1" in out, err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "nan@1:w" in warning[0] and "nan@1:b" not in warning[0]
    assert sorted(_rows(run)) == ["ft1@1", "m@1", "nan@1"]
