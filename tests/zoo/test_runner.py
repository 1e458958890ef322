"""The runner with several outputs per run: one run record, every output registered in one
transaction (all or nothing), each with its own card and provenance metadata, cache hits
returning them all, and the launched-processes path recording them once."""
from __future__ import annotations

import json

import pytest
import torch

from zoo.card import read_card_recipe
from zoo.catalog import Parent
from zoo.registry import Operator, OperatorParams, register
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


register(Operator("test.split", "1", SplitParams, _split, "one model per part", relation="adapter"))


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
