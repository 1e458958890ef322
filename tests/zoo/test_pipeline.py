"""Pipelines: checks before running, caching and resume, grids, failure isolation,
eval/select with reports, parallel jobs, the `zoo build` command."""
from __future__ import annotations

import json

import pytest
import yaml

from zoo.errors import ZooError
from zoo.pipeline import Pipeline, plan, run_pipeline

VIT = {"family": "vit", "config": {"hidden_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 24, "image_size": 8, "patch_size": 4, "num_channels": 1,
                                   "num_labels": 10}}


def doc(**extra_steps) -> dict:
    steps = {
        "base": {"op": "init.random", "params": VIT},
        "a": {"op": "train.finetune", "inputs": ["base"], "params": {"task": "digits:0-4", "steps": 3}},
        "b": {"op": "train.finetune", "inputs": ["base"], "params": {"task": "digits:5-9", "steps": 3, "seed": 1}},
        "merged": {"op": "merge.task_arithmetic", "inputs": [{"ref": "base", "role": "base"}, "a", "b"],
                   "grid": {"parameters.lambda": [0.5, 1.0]}},
        "scored": {"op": "eval", "inputs": ["merged", "a"], "params": {"task": "digits"}},
        "best": {"op": "select", "inputs": ["scored"], "params": {"metric": "digits/accuracy"}},
    }
    steps.update(extra_steps)
    return {"name": "t", "steps": steps}


@pytest.mark.parametrize("change, message", [
    ({"a": {"op": "train.finetune", "inputs": ["b"], "params": {"task": "digits"}},
      "b": {"op": "train.finetune", "inputs": ["a"], "params": {"task": "digits"}}}, "cycle"),
    ({"x": {"op": "merge.nope", "inputs": ["base"]}}, "unknown operator 'merge.nope'"),
    ({"x": {"op": "train.finetune", "inputs": ["base"], "params": {"task": "digits", "stepz": 3}}}, "unknown parameter 'stepz'"),
    ({"x": {"op": "train.finetune", "inputs": ["nowhere"], "params": {"task": "digits"}}}, "neither a step nor"),
    ({"x": {"op": "train.finetune", "inputs": ["base"], "grid": {"steps": []}}}, "non-empty list"),
    ({"scored": {"op": "eval", "inputs": ["merged"], "params": {}}}, "eval needs params.task"),
    ({"best": {"op": "select", "inputs": ["scored"], "params": {"metric": "m", "mode": "top"}}}, "best or pareto"),
    ({"best": {"op": "select", "inputs": ["scored"], "params": {"metric": "m", "cost": "time"}}}, "params or flops"),
    ({"best": {"op": "select", "inputs": ["scored"], "params": {"metrc": "m"}}}, "unknown select parameter 'metrc'"),
])
def test_problems_are_reported_before_anything_runs(catalog, change, message):
    with pytest.raises(ZooError, match=message):
        run_pipeline(catalog, Pipeline.from_dict(doc(**change)))
    assert catalog.ls() == []


def test_plan_lists_steps_in_order_with_grid_points(catalog):
    steps = plan(catalog, Pipeline.from_dict(doc()))
    order = [s["step"] for s in steps]
    assert order.index("base") < order.index("a") < order.index("merged") < order.index("best")
    merged = next(s for s in steps if s["step"] == "merged")
    assert merged["runs"] == 2 and merged["outputs"] == ["t-merged-0", "t-merged-1"]
    assert catalog.ls() == []


def test_build_caches_resumes_and_forces(catalog, tmp_path):
    pipe = Pipeline.from_dict(doc())
    first = run_pipeline(catalog, pipe, report_dir=tmp_path / "r")
    assert {n: r.status for n, r in first.items()} == {"base": "ran", "a": "ran", "b": "ran", "merged": "ran",
                                                      "scored": "ran", "best": "ran"}
    lams = sorted(catalog.show(ref)["run"]["params"]["parameters"]["lambda"] for ref in first["merged"].outputs)
    assert lams == [0.5, 1.0]
    kept = first["best"].outputs
    scores = {r["ref"]: r["metric"] for r in first["best"].report["rows"]}
    assert len(kept) == 1 and scores[kept[0]] == max(scores.values())
    assert (tmp_path / "r" / "t-best.md").exists() and (tmp_path / "r" / "t-best.png").stat().st_size > 1000
    n_models = len(catalog.ls())
    again = run_pipeline(catalog, pipe, force={"b"})
    assert again["base"].status == again["a"].status == "reused"
    assert again["b"].status == "ran"  # forced; its output name is reused as a new version
    assert len(catalog.ls()) == n_models + 1  # b@2
    assert again["merged"].status == "reused"  # b@2 has b@1's bytes: same input digests, same cache key
    assert again["scored"].status == "reused"  # every input already holds digits/accuracy
    assert again["scored"].report == {ref: {"digits/accuracy": scores[ref]} for ref in first["scored"].outputs}
    forced = run_pipeline(catalog, pipe, force={"scored"})
    assert forced["scored"].status == "ran" and "digits/loss" in forced["scored"].report[kept[0]]


def test_a_failed_step_stops_only_its_descendants(catalog):
    broken = doc(bad={"op": "train.finetune", "inputs": ["base"], "params": {"task": "pytext", "steps": 1}},
                 after={"op": "eval", "inputs": ["bad"], "params": {"task": "digits"}})
    results = run_pipeline(catalog, Pipeline.from_dict(broken), jobs=2)
    assert results["bad"].status == "failed" and "vision" in results["bad"].detail
    assert results["after"].status == "skipped"
    assert results["best"].status == "ran" and results["merged"].status == "ran"


def test_pareto_select_and_build_command(run, tmp_path):
    pipe = doc(front={"op": "select", "inputs": ["scored"], "params": {"metric": "digits/accuracy", "mode": "pareto"}})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipe))
    code, out, err = run("build", str(path), "--dry-run")
    assert code == 0 and "merged: merge.task_arithmetic" in out
    code, out, err = run("build", str(path), "--json", "--reports", str(tmp_path / "rep"))
    rows = {r["step"]: r for r in json.loads(out)}
    assert code == 0 and rows["front"]["status"] == "ran" and rows["front"]["outputs"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc(x={"op": "train.finetune", "inputs": ["base"], "params": {"task": "pytext"}})))
    code, out, err = run("build", str(bad), "--reports", str(tmp_path / "rep2"))
    assert code != 0 and err.strip().splitlines()[-1].startswith("error: 1 step(s) did not finish: x")
    code, _, err = run("build", str(tmp_path / "missing.yaml"))
    assert code != 0 and "no such pipeline file" in err


def test_select_against_flops_counts_them_like_a_hand_count(catalog, tmp_path):
    """FLOPs per example (2 per multiply-add) of the tiny ViT, counted by hand: patch
    embedding, per layer q/k/v/o + attention (scores and mix) + MLP, and the classifier."""
    wide = {**VIT, "config": {**VIT["config"], "hidden_size": 16, "intermediate_size": 32}}
    pipe = doc(w={"op": "init.random", "params": wide},
               scored={"op": "eval", "inputs": ["a", "w"], "params": {"task": "digits"}},
               best={"op": "select", "inputs": ["scored"],
                     "params": {"metric": "digits/accuracy", "mode": "pareto", "cost": "flops"}})
    results = run_pipeline(catalog, Pipeline.from_dict(pipe), report_dir=tmp_path)

    def hand(d: int, m: int, layers: int = 1, patches: int = 4, patch_px: int = 16, classes: int = 10) -> int:
        n = patches + 1  # and the CLS token
        return 2 * (patches * d * patch_px + layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m) + d * classes)

    flops = {r["ref"]: r["flops"] for r in results["best"].report["rows"]}
    assert flops["t-a@1"] == hand(12, 24) and flops["t-w@1"] == hand(16, 32)
    assert catalog.get("t-a").metrics["flops"] == hand(12, 24)  # kept on the entry, not counted twice
    table = (tmp_path / "t-best.md").read_text()
    assert "| model | params | flops |" in table and f"{hand(16, 32):,}" in table
    assert (tmp_path / "t-best.png").stat().st_size > 10_000


def test_example_pipeline_is_valid(catalog):
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "digits_variants.yaml"
    steps = {s["step"]: s for s in plan(catalog, Pipeline.load(example))}
    assert {"merged", "wider", "stitched", "generated", "best"} <= set(steps)
    assert steps["merged"]["runs"] == 3 and steps["generated"]["runs"] == 2


def push_doc(**push_params) -> dict:
    """init -> two fine-tunes -> eval -> select -> push the winner."""
    steps = {k: v for k, v in doc()["steps"].items() if k in ("base", "a", "b")}
    steps["scored"] = {"op": "eval", "inputs": ["a", "b"], "params": {"task": "digits"}}
    steps["best"] = {"op": "select", "inputs": ["scored"], "params": {"metric": "digits/accuracy"}}
    steps["ship"] = {"op": "push", "inputs": ["best"], "params": {"repo": "me/{name}", **push_params}}
    return {"name": "t", "steps": steps}


def test_push_step_pushes_the_winner_once(hub, catalog, monkeypatch):
    import zoo.hub

    calls, real_push = [], zoo.hub.push
    monkeypatch.setattr(zoo.hub, "push", lambda *a, **kw: calls.append(kw) or real_push(*a, **kw))
    pipe = Pipeline.from_dict(push_doc(private=True, message="the winner"))
    ship = next(s for s in plan(catalog, pipe) if s["step"] == "ship")
    assert ship["runs"] == 0 and ship["outputs"] == [] and ship["repo"] == "me/{name}"
    first = run_pipeline(catalog, pipe)
    assert first["ship"].status == "ran", first["ship"].detail
    winner = catalog.get(first["best"].outputs[0])
    assert first["ship"].outputs == [winner.ref]
    repo_id = f"me/{winner.name}"
    assert list(hub.state.repos) == [repo_id]  # only the selected model
    repo = hub.state.repos[repo_id]
    assert calls == [{"private": True, "revision": None, "message": "the winner"}]
    (pushed,) = first["ship"].report["pushes"]
    assert pushed["repo_id"] == repo_id and pushed["status"] == "pushed" and pushed["commit"] == repo.branches["main"]
    assert pushed["url"].endswith(pushed["commit"])
    assert {"model.safetensors", "README.md"} <= set(repo.commits[pushed["commit"]])

    again = run_pipeline(catalog, pipe)
    assert again["ship"].status == "reused" and again["ship"].report["pushes"][0]["status"] == "reused"
    assert again["ship"].report["pushes"][0]["commit"] == pushed["commit"] and len(repo.commits) == 1
    forced = run_pipeline(catalog, pipe, force={"ship"})
    assert forced["ship"].status == "ran" and len(repo.commits) == 2


def test_dry_run_shows_push_steps(run, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(push_doc()))
    code, out, err = run("build", str(path), "--dry-run")
    assert code == 0 and "ship: push <- best  (push to me/{name})" in out, out + err


@pytest.mark.parametrize("change, message", [
    ({"ship": {"op": "push", "inputs": ["best"]}}, "push needs params.repo"),
    ({"ship": {"op": "push", "inputs": ["a", "b"], "params": {"repo": "me/{pipeline}-model"}}}, "must contain {name}"),
    ({"ship": {"op": "push", "inputs": ["scored"], "params": {"repo": "me/winner"}}}, "must contain {name}"),
    ({"ship": {"op": "push", "inputs": ["best"], "params": {"repo": "me/{name}", "privat": True}}},
     "unknown push parameter 'privat' \\(known: message, private, repo, revision\\)"),
    ({"ship": {"op": "push", "inputs": ["best"], "params": {"repo": "me/{nme}"}}}, "field {nme} is unknown"),
])
def test_push_problems_are_reported_before_anything_runs(catalog, change, message):
    with pytest.raises(ZooError, match=message) as e:
        run_pipeline(catalog, Pipeline.from_dict(push_doc() | {"steps": push_doc()["steps"] | change}))
    assert "\n" not in str(e.value)
    assert catalog.ls() == []


# ----- input contracts: a step that takes one model is never silently given the first of several ----
def grown_doc(**grown) -> dict:
    """A 2-point grid of random ViTs, then a LEMON expansion that takes exactly one source."""
    return {"name": "g", "steps": {
        "base": {"op": "init.random", "params": VIT, "grid": {"seed": [0, 1]}},
        "grown": {"op": "expand.lemon", "inputs": ["base"], "params": {"num_layers": 2}, **grown},
    }}


def test_a_grid_fed_to_a_one_model_step_is_refused_at_dry_run(run, catalog, tmp_path):
    with pytest.raises(ZooError, match=r"^step 'grown': input 'base' gives 2 models, but expand.lemon takes exactly 1 "
                                       r"with role 'source'; add `for_each: base`") as e:
        plan(catalog, Pipeline.from_dict(grown_doc()))
    assert "\n" not in str(e.value) and catalog.ls() == []
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grown_doc()))
    code, out, err = run("build", str(path), "--dry-run")
    assert code != 0 and err.count("\n") == 1 and "for_each: base" in err and out == ""
    code, out, err = run("build", str(path))
    assert code != 0 and "for_each: base" in err and json.loads(run("ls", "--json")[1]) == []


def test_for_each_runs_the_step_once_per_model_with_that_one_parent(catalog):
    pipe = Pipeline.from_dict(grown_doc(for_each="base"))
    grown = next(s for s in plan(catalog, pipe) if s["step"] == "grown")
    assert grown["runs"] == 2 and grown["outputs"] == ["g-grown-0", "g-grown-1"] and grown["for_each"] == "base"
    results = run_pipeline(catalog, pipe)
    assert results["grown"].status == "ran" and results["grown"].outputs == ["g-grown-0@1", "g-grown-1@1"]
    for source, out in zip(results["base"].outputs, results["grown"].outputs):
        assert [(edge.role, parent.ref) for edge, parent in catalog.parents(out)] == [("source", source)]
        run = catalog.producing_run(out)
        assert [(i["ref"], i["role"]) for i in run.inputs] == [(source, "source")]
        assert catalog.get(out).num_params > catalog.get(source).num_params  # it did grow


@pytest.mark.parametrize("step, message", [
    ({"op": "expand.lemon", "inputs": ["base"], "for_each": "other"}, "`for_each:` names one of the step's inputs"),
    ({"op": "eval", "inputs": ["base"], "params": {"task": "digits"}, "for_each": "base"}, "for operator steps"),
    ({"op": "merge.ties", "inputs": ["base"]}, "merge.ties takes exactly 1 model\\(s\\) with role 'base', got 0"),
    ({"op": "merge.ties", "inputs": [{"ref": "base", "role": "source"}], "for_each": "base"},
     "merge.ties takes no model with role 'source', got 1"),
    ({"op": "init.random", "params": VIT, "inputs": ["base"], "for_each": "base"},
     "init.random takes no model with role 'input', got 1 \\(it takes: no inputs\\)"),
])
def test_contract_problems_of_a_step_are_one_line_before_anything_runs(catalog, step, message):
    with pytest.raises(ZooError, match=message) as e:
        run_pipeline(catalog, Pipeline.from_dict(grown_doc() | {"steps": {**grown_doc()["steps"], "grown": step}}))
    assert "\n" not in str(e.value) and catalog.ls() == []
