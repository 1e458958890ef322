"""Populations for weight-generation research: the zoo_mlp family, digits label
permutations and support sets, the vectorised population builder (vmap training equals
one model trained alone), its catalog entries, and `zoo population`."""
from __future__ import annotations

import json

import pytest
import torch

from zoo.card import read_card_recipe
from zoo.errors import ZooError
from generators.wgen.family import mlp_config
from zoo.families import Axis, family_of, get_family
from zoo.tasks import get_task
from zoo.tasks.digits import label_permutation

STEPS, LR, BATCH = 150, 1e-2, 64
TASKS, SEEDS = ["digits:perm3", "digits:1,4,7"], [0, 1]


@pytest.fixture(scope="module")
def pop(tmp_path_factory):
    """A 2 tasks x 2 seeds population in its own catalog: (catalog, entries)."""
    from generators.zoo_builder import build_population
    from zoo import Catalog

    root = tmp_path_factory.mktemp("pop")
    catalog = Catalog(root / "catalog.db", store=root / "store")
    timings, calls = {}, []
    entries = build_population(catalog, TASKS, SEEDS, steps=STEPS, lr=LR, batch_size=BATCH, prefix="pop",
                               progress=calls.append, timings=timings)
    assert len(calls) == STEPS + 4 and set(timings) == {"data", "train", "evaluate", "register"}
    return catalog, entries


def _tensors(catalog, entry) -> dict[str, torch.Tensor]:
    ckpt = catalog.open(entry)
    return {n: ckpt.get(n) for n in ckpt.names()}


# ----- the family --------------------------------------------------------------------------
def test_mlp_family_roles_build_and_detection(tmp_path):
    from zoo import Checkpoint, save_tensors

    fam = get_family("zoo_mlp")
    config = mlp_config((64, 16, 12, 10))
    assert fam.modality == "vision" and fam.architectures == ("ZooMLP",)
    with pytest.raises(KeyError):
        fam.widths(config)
    torch.manual_seed(0)
    model = fam.build(config)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "layers.2.weight",
                     "layers.2.bias"] and not model.training
    roles = fam.roles(names, config)
    assert roles["layers.1.weight"].axes == (Axis.KEEP, Axis.KEEP) and roles["layers.2.bias"].axes == (Axis.KEEP,)
    assert roles["layers.1.weight"].layer == 1 and roles["layers.1.weight"].kind == "linear"
    assert fam.role("layers.3.weight", config) is None  # no fourth layer
    x = fam.example_inputs(config, 5, torch.Generator().manual_seed(0))["pixel_values"]
    logits = model(pixel_values=x).logits
    hidden = torch.relu(torch.relu(x.flatten(1) @ model.layers[0].weight.T + model.layers[0].bias)
                        @ model.layers[1].weight.T + model.layers[1].bias)
    torch.testing.assert_close(logits, hidden @ model.layers[2].weight.T + model.layers[2].bias)

    save_tensors(tmp_path / "m", {n: p.detach() for n, p in model.named_parameters()}, config=config)
    found, cfg = family_of(Checkpoint.open(tmp_path / "m"))
    assert found is fam and cfg["layer_sizes"] == [64, 16, 12, 10]
    torch.testing.assert_close(found.load(Checkpoint.open(tmp_path / "m"))(pixel_values=x).logits, logits)
    with pytest.raises(ZooError, match="first layer size must be"):
        mlp_config((32, 10))


# ----- tasks: permutations and support sets ------------------------------------------------
def test_permuted_labels_are_used_everywhere():
    plain, perm3 = get_task("digits"), get_task("digits:perm3")
    p = label_permutation(3)
    assert torch.equal(p, torch.randperm(10, generator=torch.Generator().manual_seed(3)))
    assert sorted(p.tolist()) == list(range(10)) and not torch.equal(p, label_permutation(5))
    for split in ("train", "val", "test"):
        (x0, y0), (x3, y3) = plain.split(split), perm3.split(split)
        assert torch.equal(x0, x3) and torch.equal(y3, p[y0])
    config = mlp_config()
    b0 = next(plain.train_batches(config, 16, torch.Generator().manual_seed(1)))
    b3 = next(perm3.train_batches(config, 16, torch.Generator().manual_seed(1)))
    assert torch.equal(b0["pixel_values"], b3["pixel_values"]) and torch.equal(b3["labels"], p[b0["labels"]])
    # older variants unchanged; unknown ones: one clear error
    assert set(get_task("digits:0-4").split("test")[1].tolist()) == {0, 1, 2, 3, 4}
    assert set(get_task("digits:1,3,7").split("train")[1].tolist()) == {1, 3, 7}
    for bad in ("digits:perm", "digits:permx", "digits:shuffled", "digits:1-"):
        with pytest.raises(ZooError, match="unknown variant; use digits, digits:0-4"):
            get_task(bad)


def test_support_gives_k_examples_per_present_class():
    sub = get_task("digits:1,4,7")
    s = sub.support(3, torch.Generator().manual_seed(0))
    assert s["pixel_values"].shape == (9, 1, 8, 8) and s["labels"].tolist() == [1, 1, 1, 4, 4, 4, 7, 7, 7]
    again = sub.support(3, torch.Generator().manual_seed(0))
    assert torch.equal(s["pixel_values"], again["pixel_values"])
    x, y = sub.split("train")  # every example is a real training example with its label
    for img, label in zip(s["pixel_values"], s["labels"]):
        assert (y[(x == img).flatten(1).all(1)] == label).any()
    perm = get_task("digits:perm3").support(2, torch.Generator().manual_seed(0))
    assert perm["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    with pytest.raises(ZooError, match="support needs 1 to"):
        sub.support(10_000, torch.Generator())


# ----- the builder -------------------------------------------------------------------------
def test_vmapped_training_equals_one_model_trained_alone(pop):
    """Each population model equals the same model trained by itself: a plain loop over the
    task's own batches with the task's loss, autograd and the same hand-written Adam."""
    from generators.zoo_builder import adam_update, data_generator, initial_model

    catalog, entries = pop
    config = mlp_config()
    for entry, (task_spec, seed) in ((entries[0], ("digits:perm3", 0)), (entries[3], ("digits:1,4,7", 1))):
        task = get_task(task_spec)
        model = initial_model(config["layer_sizes"], 0)
        params = dict(model.named_parameters())
        m = {n: torch.zeros_like(p) for n, p in params.items()}
        v = {n: torch.zeros_like(p) for n, p in params.items()}
        batches = task.train_batches(config, BATCH, data_generator(task_spec, seed))
        for step in range(1, STEPS + 1):
            loss = task.loss(model, next(batches))
            for (n, p), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
                adam_update(p.data, g, m[n], v[n], step, LR)
        stored = _tensors(catalog, entry)
        assert set(stored) == set(params)
        for n, p in params.items():
            torch.testing.assert_close(stored[n], p.detach(), atol=1e-5, rtol=1e-5)


def test_population_entries_tags_metrics_runs_and_reload(pop):
    from generators.zoo_builder import initial_model, population

    catalog, entries = pop
    assert [e.name for e in entries] == ["pop-digits-perm3-s0", "pop-digits-perm3-s1", "pop-digits-1_4_7-s0",
                                         "pop-digits-1_4_7-s1"]
    listed = population(catalog, "pop")
    assert [(e.id, t) for e, t in listed] == [(e.id, t) for e, t in zip(entries, [TASKS[0]] * 2 + [TASKS[1]] * 2)]
    run = catalog.producing_run(entries[0])  # one run made them all, with a cache key
    assert (run.operator, run.operator_version) == ("generate.population", "1") and run.cache_key
    assert run.params == {"tasks": TASKS, "seeds": SEEDS, "steps": STEPS, "lr": LR, "batch_size": BATCH,
                          "init_seed": 0, "layer_sizes": [64, 32, 10], "prefix": "pop"}
    assert [o["id"] for o in run.outputs] == [e.id for e in entries]
    init = {n: p.detach() for n, p in initial_model().named_parameters()}
    for (entry, task_spec), seed, out in zip(listed, SEEDS * 2, run.outputs):
        assert catalog.tags_of(entry) == sorted(["pop", f"task={task_spec}"])
        assert set(entry.metrics) == {f"{task_spec}/accuracy", f"{task_spec}/loss"} and entry.family == "zoo_mlp"
        assert catalog.producing_run(entry).id == run.id and out["detail"] == {"task": task_spec, "seed": seed}
        ckpt = catalog.open(entry)  # card and provenance metadata written through the runner
        assert read_card_recipe((ckpt.root / "README.md").read_text())["operator"] == "generate.population"
        assert json.loads(ckpt.metadata["weightzoo"])["output"] == {"task": task_spec, "seed": seed}
        fam, config = family_of(catalog.open(entry.ref))
        model = fam.load(catalog.open(entry.ref))
        got = get_task(task_spec).evaluate(model, config)
        assert got["accuracy"] == pytest.approx(entry.metrics[f"{task_spec}/accuracy"], abs=1e-7)
        assert got["loss"] == pytest.approx(entry.metrics[f"{task_spec}/loss"], abs=1e-5)
        assert got["accuracy"] > 0.85
        assert not torch.equal(model.layers[0].weight, init["layers.0.weight"])  # trained from the shared init
    # same task, other seed: other data order, other weights
    a, b = (_tensors(catalog, e)["layers.0.weight"] for e in entries[:2])
    assert not torch.allclose(a, b)
    with pytest.raises(ZooError, match="no models tagged 'nope'"):
        population(catalog, "nope")


def test_a_permutation_model_knows_its_own_labelling(pop):
    catalog, entries = pop
    fam, config = family_of(catalog.open(entries[0]))
    model = fam.load(catalog.open(entries[0]))  # trained on digits:perm3
    own = get_task("digits:perm3").evaluate(model, config)["accuracy"]
    other = get_task("digits:perm5").evaluate(model, config)["accuracy"]
    agree = (label_permutation(3) == label_permutation(5)).float().mean().item()  # labels the two share
    assert own > 0.9 and other < agree + 0.15


def test_builder_refuses_bad_input_before_training(catalog):
    from generators.zoo_builder import build_population

    for kwargs, match in (({"tasks": ["pytext"]}, "not a digits task"), ({"tasks": ["digits:perm"]}, "unknown variant"),
                          ({"tasks": ["digits"], "prefix": "a b"}, "invalid prefix"),
                          ({"tasks": ["digits"], "layer_sizes": (64, 5)}, "last layer size must be 10")):
        with pytest.raises(ZooError, match=match):
            build_population(catalog, seeds=[0], steps=1, **kwargs)
    assert catalog.count() == 0


# ----- the command -------------------------------------------------------------------------
def test_population_command(run):
    code, out, err = run("population", "--subsets", "3", "--seeds", "0,1", "--steps", "50")
    assert code == 0, err
    assert "built 6 models (3 tasks x 2 seeds, 50 steps)" in out and "tag: pop" in out
    code, out, _ = run("ls", "--tag", "pop", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 6 and all(r["family"] == "zoo_mlp" for r in rows)
    tasks = {t[5:] for r in rows for t in r["tags"] if t.startswith("task=")}
    assert len(tasks) == 3 and all(3 <= len(t.split(":")[1].split(",")) <= 7 for t in tasks)
    # the same --task-seed draws the same subsets
    from generators.frontend import population_tasks

    assert set(population_tasks([], 3, 0, 0)) == tasks
    assert population_tasks(["digits"], 0, 2) == ["digits", "digits:perm0", "digits:perm1"]


def test_population_command_bad_task_is_one_line(run):
    code, _, err = run("population", "--task", "digits:banana", "--steps", "5")
    assert code != 0 and err.count("\n") == 1 and err.startswith("error: digits:banana: unknown variant")
    code, _, err = run("population")
    assert code != 0 and "no tasks" in err


def test_population_models_show_their_run(catalog):
    from generators.zoo_builder import build_population

    entries = build_population(catalog, ["digits:0-4"], [0, 1], steps=3, prefix="p")
    for entry, seed in zip(entries, (0, 1)):
        run = catalog.show(entry.ref)["run"]
        assert run["operator"] == "generate.population" and run["params"]["tasks"] == ["digits:0-4"]
        assert run["outputs"][seed]["ref"] == entry.ref and run["outputs"][seed]["detail"]["seed"] == seed


def test_the_same_population_again_is_a_cache_hit(catalog):
    from generators.zoo_builder import build_population

    first = build_population(catalog, ["digits:0-4", "digits:perm1"], [0], steps=3, prefix="p")
    timings: dict = {}
    again = build_population(catalog, ["digits:0-4", "digits:perm1"], [0], steps=3, prefix="p", timings=timings)
    assert [e.id for e in again] == [e.id for e in first] and catalog.count() == 2 and len(catalog.runs()) == 1
    assert timings == {"data": 0.0, "train": 0.0, "evaluate": 0.0, "register": 0.0}
    other = build_population(catalog, ["digits:0-4", "digits:perm1"], [0], steps=4, prefix="p")
    assert [e.version for e in other] == [2, 2] and catalog.count() == 4
