"""Evaluation-driven merging on real data (digits): greedy soups, lambda search (adding and
negating task vectors) and aTLAS's learned per-tensor coefficients."""
from __future__ import annotations

import pytest
import torch
from tests.helpers.models import tiny_vit

import merging
from merging.apply import apply
from merging.methods.atlas import atlas, atlas_objective, atlas_state, task_vectors_of
from merging.methods.greedy_soup import greedy_soup
from merging.methods.lambda_search import lambda_search
from zoo import Catalog
from zoo.errors import ZooError
from zoo.tasks import get_task
from zoo.training import evaluate, for_task, new_model, train

pytestmark = pytest.mark.slow  # trains and scores models for the searches


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A briefly trained ViT-Ti base, fine-tunes on digits 0-4, 5-9 and all digits, and an
    unrelated random-init model."""
    d = tmp_path_factory.mktemp("evalmerge")
    cat = Catalog(d / "catalog.db", store=d / "store")
    raw = new_model(cat, "vit-ti", "raw", seed=0).entry.ref
    base = train(cat, raw, "digits", out="base", steps=200, lr=3e-3).entry.ref
    refs = {"cat": cat, "dir": d, "base": base, "rnd": new_model(cat, "vit-ti", "rnd", seed=7).entry.ref}
    for name, task, seed in (("lo", "digits:0-4", 1), ("hi", "digits:5-9", 2), ("all", "digits", 3)):
        refs[name] = train(cat, base, task, out=name, steps=100, lr=3e-3, seed=seed).entry.ref
    return refs


def _run_of(cat: Catalog, ref):
    edges = cat.parents(ref)
    run_id = edges[0][0].run_id
    return next(r for r in cat.runs() if r.id == run_id), edges


# ----- aTLAS math ------------------------------------------------------------------------------
def _states(seed: int = 0):
    base = {k: v.double() for k, v in tiny_vit(seed).state_dict().items()}
    g = torch.Generator().manual_seed(seed + 1)
    models = [{k: v + 0.01 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in base.items()}
              for _ in range(2)]
    return base, models


def test_atlas_with_unit_coefficients_is_task_arithmetic():
    base, models = _states()
    taus = task_vectors_of(base, models)
    ones = [{n: 1.0 for n in tau} for tau in taus]
    merged = atlas_state(base, taus, ones)
    for n, b in base.items():
        hand = b + (models[0][n] - b) + (models[1][n] - b)
        assert torch.equal(merged[n], b + 1.0 * taus[0][n] + 1.0 * taus[1][n])
        torch.testing.assert_close(merged[n], hand, rtol=0, atol=1e-12)
        engine = apply("task_arithmetic", b.float(), [m[n].float() for m in models],
                                     weight=[1.0, 1.0], **{"lambda": 1.0})
        torch.testing.assert_close(merged[n].float(), engine, rtol=0, atol=1e-6)
    # zero coefficients give the base back; a coefficient set per task vector is required
    assert all(torch.equal(t, base[n]) for n, t in atlas_state(base, taus, [{}, {}]).items())
    with pytest.raises(ZooError, match="coefficient sets"):
        atlas_state(base, taus, ones[:1])


@pytest.mark.parametrize("unsupervised", [False, True])
def test_atlas_gradients_match_finite_differences(unsupervised):
    base, models = _states(1)
    taus = task_vectors_of(base, models)
    module = tiny_vit(1).double()
    g = torch.Generator().manual_seed(5)
    batch = {"pixel_values": torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64),
             "labels": torch.randint(0, 10, (6,), generator=g)}
    names = list(taus[0])
    alpha = torch.full((2, len(names)), 0.3, dtype=torch.float64, requires_grad=True)
    task = get_task("digits")

    def f(a):
        coefs = [{n: a[i, j] for j, n in enumerate(names)} for i in range(2)]
        return atlas_objective(module, base, taus, coefs, batch, task, unsupervised)

    f(alpha).backward()
    picks = [(0, names.index("classifier.weight")), (1, next(j for j, n in enumerate(names) if "q_proj.weight" in n or "query.weight" in n)),
             (1, len(names) - 3)]
    eps = 1e-6
    for i, j in picks:
        with torch.no_grad():
            up, down = alpha.detach().clone(), alpha.detach().clone()
            up[i, j] += eps
            down[i, j] -= eps
            numeric = (f(up) - f(down)).item() / (2 * eps)
        assert alpha.grad[i, j].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8), (names[j], unsupervised)


# ----- on the digits zoo -----------------------------------------------------------------------
@pytest.mark.slow
def test_atlas_training_improves_its_objective_and_registers_the_merge(zoo):
    cat = zoo["cat"]
    ck, report = atlas(cat, zoo["base"], [zoo["lo"], zoo["hi"]], "digits", steps=25, lr=0.02, examples=64,
                       out="atlas")
    assert report["objective"]["end"] < report["objective"]["start"]
    assert len(report["losses"]) == 25
    run, edges = _run_of(cat, ck.entry.ref)
    assert run.operator == "merge.atlas"
    assert sorted((e.role, m.ref) for e, m in edges) == sorted(
        [("base", zoo["base"]), ("input", zoo["lo"]), ("input", zoo["hi"])])
    assert run.timings["notes"]["evaluated_merge"] == report
    # the written weights are atlas_state of the recorded coefficients
    coefs = report["coefficients"]
    b = cat.open(zoo["base"])
    base = {n: b.get(n).float() for n in b.names()}
    models = [{n: cat.open(r).get(n).float() for n in b.names()} for r in (zoo["lo"], zoo["hi"])]
    taus = task_vectors_of(base, models)
    expect = atlas_state(base, taus, [coefs[cat.get(zoo["lo"]).ref], coefs[cat.get(zoo["hi"]).ref]])
    for n in b.names():
        torch.testing.assert_close(ck.get(n), expect[n], rtol=0, atol=1e-5)
    assert "digits/val_accuracy" in cat.get(ck.entry.id).metrics
    assert cat.show(ck.entry.id)["run"]["notes"]["evaluated_merge"]["method"] == "atlas"
    # the same call is a cache hit: same entry, same report, nothing new in the catalog
    n = cat.count()
    again, report2 = atlas(cat, zoo["base"], [zoo["lo"], zoo["hi"]], "digits", steps=25, lr=0.02, examples=64,
                           out="atlas")
    assert again.reused and again.entry.id == ck.entry.id and report2 == report and cat.count() == n


def test_greedy_soup_keeps_improvements_and_rejects_a_random_model(zoo):
    cat = zoo["cat"]
    refs = [zoo["lo"], zoo["rnd"], zoo["all"], zoo["hi"]]
    ck, report = greedy_soup(cat, refs, "digits", out="soup")
    cands = {c["ref"]: c for c in report["candidates"]}
    best_single = max(c["score"] for c in report["candidates"])
    assert report["candidates"][0]["score"] == best_single and report["candidates"][0]["kept"]
    assert cands[cat.get(zoo["rnd"]).ref]["kept"] is False
    assert report["kept"] == [c["ref"] for c in report["candidates"] if c["kept"]]
    val = cat.get(ck.entry.id).metrics["digits/val_accuracy"]
    assert val >= best_single - 1e-6
    assert val == pytest.approx(report["soup_score"], abs=2e-3)  # the registered soup scores as evaluated
    run, edges = _run_of(cat, ck.entry.ref)
    assert run.operator == "merge.greedy_soup"
    k = len(report["kept"])
    assert sorted(m.ref for e, m in edges if e.role == "input") == sorted(report["kept"])
    assert all(e.weight == pytest.approx(1 / k) for e, _ in edges if e.role == "input")
    rejected = sorted(c["ref"] for c in report["candidates"] if not c["kept"])
    assert sorted(m.ref for e, m in edges if e.role == "candidate") == rejected
    # the soup is the plain average of the kept models
    kept = [cat.open(r) for r in report["kept"]]
    for n in ck.names():
        torch.testing.assert_close(ck.get(n), sum(c.get(n) for c in kept) / k, rtol=0, atol=1e-6)


def test_lambda_search_picks_the_grid_argmax_and_registers_it(zoo):
    cat = zoo["cat"]
    grid = (0.0, 0.3, 0.6, 1.0)
    ck, report = lambda_search(cat, zoo["base"], [zoo["lo"], zoo["hi"]], "digits", lambdas=grid, out="ta")
    scores = [r["score"] for r in report["grid"]]
    assert [r["lambda"] for r in report["grid"]] == list(grid)
    assert report["lambda"] == grid[scores.index(max(scores))]
    run, _edges = _run_of(cat, ck.entry.ref)
    assert run.operator == "merge.lambda_search" and run.params["lambdas"] == list(grid)
    # our own evaluation of two grid points, through the ordinary merge
    own = {}
    for lam in (report["lambda"], next(x for x in grid if x != report["lambda"])):
        m = merging.merge("task_arithmetic", base=zoo["base"], models=[zoo["lo"], zoo["hi"]], catalog=cat,
                          **{"lambda": lam})
        own[lam] = evaluate(cat, m.entry.id, "digits", "val")["digits/val_accuracy"]
        if lam == report["lambda"]:  # the registered result is that plain merge, tensor for tensor
            assert all(torch.equal(m.get(n), ck.get(n)) for n in ck.names())
    lam, other = own
    assert own[lam] >= own[other]
    assert own[lam] == pytest.approx(report["score"], abs=1e-6)


def test_negation_forgets_a_task_within_the_control_constraint(zoo):
    cat = zoo["cat"]
    ck, report = lambda_search(cat, zoo["base"], [zoo["hi"]], "digits:5-9", lambdas=(0.0, 0.4, 0.8, 1.2, 1.6),
                               negate=True, control_task="digits:0-4", out="forget")
    b = cat.open(zoo["base"])
    fam, config, control = for_task(b, "digits:0-4")
    base_control = control.evaluate(fam.load(b).float(), config, "val")["accuracy"]
    assert report["control_min"] == pytest.approx(0.95 * base_control)
    assert report["control"] >= report["control_min"]
    allowed = [r for r in report["grid"] if r["control"] >= report["control_min"]]
    assert report["score"] == min(r["score"] for r in allowed)
    assert report["score"] <= report["grid"][0]["score"]  # no worse at forgetting than the base
    run, edges = _run_of(cat, ck.entry.ref)
    assert sorted((e.role, e.weight) for e, _ in edges) == [("base", None), ("input", -1.0)]
    assert run.params["negate"] is True and run.timings["notes"]["evaluated_merge"]["lambda"] == report["lambda"]
    with pytest.raises(ZooError, match="no lambda keeps"):
        lambda_search(cat, zoo["base"], [zoo["hi"]], "digits:5-9", lambdas=(0.4, 0.8), negate=True,
                      control_task="digits:0-4", control_min=1.01)


def test_command_line_and_pipelines_run_the_searches(zoo, capsys, monkeypatch, tmp_path):
    from zoo.cli import main
    from zoo.pipeline import Pipeline, run_pipeline

    cat = zoo["cat"]
    monkeypatch.setenv("ZOO_CATALOG", str(zoo["dir"] / "catalog.db"))
    monkeypatch.setenv("ZOO_STORE", str(zoo["dir"] / "store"))
    code = main(["merge", "--method", "greedy_soup", "--model", zoo["lo"], "--model", zoo["rnd"], "--model",
                 zoo["all"], "--set", "task=digits", "--out", "cli-soup"])
    out = capsys.readouterr().out
    assert code == 0 and "greedy soup kept" in out and "cli-soup@1" in out
    assert cat.get("cli-soup").metrics["digits/val_accuracy"] > 0.1
    for args, message in (
        (["--method", "lambda_search", "--model", zoo["lo"], "--set", "task=digits"], "needs the pretrained model"),
        (["--method", "atlas", "--base", zoo["base"], "--model", zoo["lo"], "--set", "tsk=digits"],
         "unknown parameter 'tsk'"),
        (["--method", "greedy_soup", "--base", zoo["base"], "--model", zoo["lo"], "--set", "task=digits"],
         "takes no --base"),
    ):
        n = cat.count()
        code = main(["merge", *args])
        err = capsys.readouterr().err.strip()
        assert code != 0 and message in err and len(err.splitlines()) == 1 and cat.count() == n

    doc = {"name": "search", "steps": {
        "soup": {"op": "merge.greedy_soup", "inputs": [zoo["lo"], zoo["hi"], zoo["all"]],
                 "params": {"task": "digits"}},
        "forget": {"op": "merge.lambda_search", "inputs": [{"ref": zoo["base"], "role": "base"}, zoo["hi"]],
                   "params": {"task": "digits:5-9", "negate": True, "lambdas": [0.0, 0.8],
                              "control_task": "digits:0-4"}},
    }}
    first = run_pipeline(cat, Pipeline.from_dict(doc), report_dir=tmp_path)
    assert {n: r.status for n, r in first.items()} == {"soup": "ran", "forget": "ran"}
    assert cat.show(first["forget"].outputs[0])["run"]["notes"]["evaluated_merge"]["negate"] is True
    again = run_pipeline(cat, Pipeline.from_dict(doc), report_dir=tmp_path)
    assert {n: r.status for n, r in again.items()} == {"soup": "reused", "forget": "reused"}
