"""Weight generation: exact weight layouts, seeded sampling, D2NWG and p-diff end to end
on a small digits zoo, lineage of generators and generated models."""
from __future__ import annotations

import pytest
import torch

from generators.wgen.generator import WeightGenerator
from generators.wgen.layout import Normaliser, WeightLayout
from zoo.errors import ZooError

from tests.helpers.models import tiny_vit


def test_flatten_unflatten_round_trips_exactly():
    state = tiny_vit().state_dict()
    layout = WeightLayout.of(state, chunk=100)
    vec = layout.flatten(state)
    assert vec.numel() == layout.numel == sum(t.numel() for t in state.values())
    back = layout.unflatten(vec)
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)
    chunks = layout.to_chunks(vec.unsqueeze(0))
    assert chunks.shape == (1, layout.chunks, 100) and torch.equal(layout.from_chunks(chunks)[0], vec)
    with pytest.raises(ZooError, match="do not fit"):
        layout.flatten({k: v for k, v in list(state.items())[1:]})


def test_normaliser_is_per_tensor_and_invertible():
    g = torch.Generator().manual_seed(0)
    layout = WeightLayout(["a", "b"], [(3, 4), (5,)], chunk=8)
    vecs = torch.cat([torch.randn(50, 12, generator=g) * 10 + 3, torch.randn(50, 5, generator=g) * 0.01], 1)
    norm = Normaliser.fit(layout, vecs)
    z = norm(vecs)
    assert abs(z[:, :12].std().item() - 1) < 0.05 and abs(z[:, 12:].std().item() - 1) < 0.1
    assert torch.allclose(norm.inverse(z), vecs, atol=1e-4)


def test_sampling_is_seeded_and_reproducible():
    layout = WeightLayout(["w"], [(40,)], chunk=16)
    torch.manual_seed(0)
    gen = WeightGenerator(layout, latent=4, hidden=32, depth=1)
    a, b, c = gen.sample(3, seed=1, steps=5), gen.sample(3, seed=1, steps=5), gen.sample(3, seed=2, steps=5)
    assert a.shape == (3, 40) and torch.equal(a, b) and not torch.equal(a, c)


def test_nearest_agreement_hand_computed():
    from generators.wgen.memorization import nearest_agreement, nearest_distance

    ref = torch.tensor([[0, 1, 2, 3], [0, 1, 1, 1]])
    gen = torch.tensor([[0, 1, 2, 0], [3, 3, 3, 3]])
    assert nearest_agreement(gen, ref).tolist() == [0.75, 0.25]
    assert nearest_agreement(ref, ref, exclude_self=True).tolist() == [0.5, 0.5]
    assert nearest_distance(torch.tensor([[0.0, 3.0]]), torch.tensor([[0.0, 0.0], [4.0, 3.0]])).tolist() == [3.0]


# --- end to end on a small zoo -------------------------------------------------------------

@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    from generators.zoo_builder import build_population
    from zoo import Catalog

    root = tmp_path_factory.mktemp("gen")
    cat = Catalog(root / "c.db", store=root / "s")
    tasks = ["digits:0-4", "digits:5-9", "digits:0,2,4,6,8", "digits:1,3,5,7,9"]
    build_population(cat, tasks, [0, 1], steps=150, prefix="zoo")
    return cat, tasks


def test_d2nwg_end_to_end_lineage_and_reconstruction(small_zoo):
    from generators import frontend
    from zoo.families import family_of

    cat, tasks = small_zoo
    r = frontend.d2nwg_train(cat, "zoo", "gen", vae_steps=400, diffusion_steps=60, hidden=64)
    m = r.entry.metrics
    assert m["zoo_models"] == 8
    assert m["vae/accuracy_drop"] < 0.05  # decoded weights keep their accuracy within a few points
    parents = cat.show("gen")["parents"]
    assert len(parents) == 8 and {p["role"] for p in parents} == {"zoo"}
    results = frontend.sample(cat, "gen", "digits:0-4", 2, seed=3)
    for res in results:
        ckpt = cat.open(res.entry.ref)
        fam, cfg = family_of(ckpt)
        assert fam.name == "zoo_mlp"
        fam.load(ckpt)
        assert [p["role"] for p in cat.show(res.entry.ref)["parents"]] == ["generator"]
        assert "digits:0-4/accuracy" in res.entry.metrics and "digits:0-4/generated_accuracy" in res.entry.metrics
    again = frontend.sample(cat, "gen", "digits:0-4", 2, seed=3)
    assert [a.reused for a in again] == [True, True]
    ancestors = {e.name for e in cat.ancestors(results[0].entry.ref)}
    assert "gen" in ancestors and len(ancestors) == 9


def test_pdiff_end_to_end(small_zoo):
    from generators import frontend

    cat, _ = small_zoo
    base = cat.ls(tag="zoo")[0]["name"]
    task = next(t for t in cat.show(base)["tags"] if t.startswith("task="))[5:]
    r = frontend.pdiff_train(cat, base, task, "pd", checkpoints=20, vae_steps=50, diffusion_steps=50, hidden=64)
    assert r.entry.metrics["checkpoints"] == 20
    ckpt = cat.open("pd")
    assert ckpt.info("collected").shape == (20, 32 * 10 + 10)  # the last layer of a 64-32-10 MLP
    res = frontend.sample(cat, "pd", None, 2)
    assert all(f"{task}/accuracy" in x.entry.metrics for x in res)


def test_generator_errors(small_zoo):
    from generators import frontend

    cat, _ = small_zoo
    with pytest.raises(ZooError, match="no models tagged"):
        frontend.d2nwg_train(cat, "nothing")
    with pytest.raises(ZooError, match="not a weight generator"):
        frontend.sample(cat, cat.ls(tag="zoo")[0]["name"], "digits", 1)


def test_generate_commands(run):
    import json

    code, _, err = run("population", "--task", "digits:0-4", "--task", "digits:5-9", "--seeds", "0,1", "--steps", "20",
                       "--prefix", "z")
    assert code == 0, err
    code, out, err = run("generate", "d2nwg", "train", "--zoo", "z", "--vae-steps", "20", "--diffusion-steps", "20",
                         "--out", "g")
    assert code == 0 and "trained generator g@1" in out, err
    code, out, err = run("generate", "d2nwg", "sample", "g", "--task", "digits:1-3", "--n", "2", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2 and all("digits:1-3/accuracy" in r for r in rows)
    code, _, err = run("generate", "d2nwg", "train", "--zoo", "nope")
    assert code != 0 and err.count("\n") == 1 and "no models tagged" in err
