"""Weight generation: exact weight layouts, seeded sampling, p-diff's noise-augmented
autoencoder, D2NWG and p-diff end to end on a small digits zoo, lineage of generators and
generated models, and quality checks (better than random init on a held-out task,
conditioning, not copies) each run once more against a Gaussian-noise "generator" that
must fail them."""
from __future__ import annotations

import pytest
import torch

from generators.wgen.generator import WeightGenerator
from generators.wgen.layout import Normaliser, WeightLayout
from generators.wgen.nets import mix_noise
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


def test_wrong_iou_hand_computed():
    from generators.wgen.memorization import wrong_iou

    labels = torch.tensor([0, 1, 2, 3])
    ref = torch.tensor([[9, 9, 2, 3], [0, 1, 2, 3]])  # wrong on {0, 1}; no mistakes
    gen = torch.tensor([[9, 1, 9, 3], [0, 1, 2, 3]])  # wrong on {0, 2}: IoU 1/3 with ref 0; perfect = ref 1
    assert torch.allclose(wrong_iou(gen, labels, ref), torch.tensor([1 / 3, 1.0]))
    assert wrong_iou(ref, labels, ref, exclude_self=True).tolist() == [0.0, 0.0]


# --- p-diff's noise-augmented autoencoder ---------------------------------------------------

def test_mix_noise_is_pdiffs_convex_mix():
    """Reference `add_noise`: randn_like(x) * f + x * (1 - f), not x + f * eps."""
    x = torch.arange(6.0).reshape(2, 3)
    torch.manual_seed(5)
    got = mix_noise(x, 0.25)
    torch.manual_seed(5)
    eps = torch.randn(2, 3)
    assert torch.equal(got, 0.75 * x + 0.25 * eps)
    assert mix_noise(x, 0.0) is x


def test_pdiff_autoencoder_sees_noisy_input_and_latent_only_while_training():
    """What reaches the encoder and the decoder, recomputed by hand from the same draws:
    with f = 0 the clean chunks and the clamped tanh latent; with f > 0 the mixes."""
    layout = WeightLayout(["w"], [(12,)], chunk=6)
    torch.manual_seed(0)
    gen = WeightGenerator(layout, latent=3, hidden=16, depth=1, squash=True)
    vae = gen.vae
    seen: dict[str, torch.Tensor] = {}
    vae.encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("enc", i[0][..., :6]))
    vae.decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("dec", i[0][..., :3]))
    x = torch.randn(4, 2, 6)
    with torch.no_grad():
        clean_z = vae.encode(x)[0]
        recon, kl = vae(x)
        assert torch.equal(seen["enc"], x) and torch.equal(seen["dec"], clean_z.clamp(-1, 1)) and kl == 0
        assert clean_z.abs().max() <= 1  # tanh-bounded latent
        assert torch.equal(recon, vae.decode(clean_z))
        torch.manual_seed(7)
        vae(x, input_noise=0.1, latent_noise=0.5)
        torch.manual_seed(7)
        x_in = 0.9 * x + 0.1 * torch.randn_like(x)
        assert torch.equal(seen["enc"], x_in)
        z = vae.encode(x_in)[0]
        assert torch.allclose(seen["dec"], (0.5 * z + 0.5 * torch.randn_like(z)).clamp(-1, 1))
        a, b = vae.encode(x)[0], vae.encode(x)[0]  # the generator's encode/decode: no noise
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="squash"):
        WeightGenerator(layout, latent=3, hidden=16, depth=1).fit_vae(torch.randn(4, 12), 1, latent_noise=0.1)


def _trajectory(seed: int, k: int = 32, d: int = 48) -> torch.Tensor:
    """k vectors along a line with a little scatter: checkpoints of one training run."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(d, generator=g), torch.randn(d, generator=g)
    return a + torch.linspace(-1, 1, k).unsqueeze(1) * b + 0.05 * torch.randn(k, d, generator=g)


@pytest.mark.slow
def test_noise_augmented_autoencoder_reconstructs_from_a_noisy_latent():
    """The paper's point: an autoencoder trained with latent noise decodes a noisy latent
    (the diffusion model's imperfect samples) back near the training set; one trained
    clean does not (MSE on standardised weights, variance 1)."""
    vectors = _trajectory(0)
    layout = WeightLayout(["w"], [(48,)], chunk=48)
    errors = {}
    for f in (0.5, 0.0):
        torch.manual_seed(0)
        gen = WeightGenerator(layout, latent=16, hidden=64, depth=1, squash=True)
        gen.fit_vae(vectors, 200, batch_size=32, input_noise=0.001, latent_noise=f)
        chunks = layout.to_chunks(gen.normaliser(vectors))
        torch.manual_seed(1)
        with torch.no_grad():
            z = gen.vae.eval().encode(chunks)[0]
            errors[f] = torch.nn.functional.mse_loss(gen.vae.decode(mix_noise(z, 0.5).clamp(-1, 1)), chunks).item()
    assert errors[0.5] < 0.06 and errors[0.0] > 2 * errors[0.5], errors


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


# --- quality: better than random init, conditioned, not copies --------------------------------
# Each criterion is a function of measured figures, asserted for the real generator and
# asserted to FAIL for a generator whose `sample` draws Gaussian noise with the zoo's
# per-tensor mean and std (and, for "not copies", one that returns training checkpoints).

HELD_A, HELD_B = "digits:0-3", "digits:6-9"  # no zoo model was trained on either


def gaussian_sample(self, n, summary=None, seed=0, steps=50, guidance=2.0):
    """A stand-in for `WeightGenerator.sample` that ignores everything it learnt but the
    per-tensor statistics of its training weights."""
    return self.normaliser.inverse(torch.randn(n, self.layout.numel, generator=torch.Generator().manual_seed(seed)))


def _accuracy(cfg: dict, state: dict, task: str) -> float:
    from zoo.families import get_family
    from zoo.tasks import get_task

    model = get_family("zoo_mlp").build(cfg)
    model.load_state_dict(state, strict=False)
    return get_task(task).evaluate(model.float().eval(), cfg)["accuracy"]


def _random_init_state(cfg: dict, seed: int) -> dict:
    from zoo.families import get_family

    torch.manual_seed(seed)
    return get_family("zoo_mlp").build(cfg).state_dict()


def d2nwg_quality(cat, name: str, n: int = 8) -> dict:
    """Mean accuracy of n samples generated for each held-out task, scored on both tasks,
    and of random init (three seeds) on task A."""
    from generators.wgen.operators import load_generator, task_summary

    ckpt = cat.open(name)
    gen, cfg = load_generator(ckpt), ckpt.config["target"]
    acc = {}
    for made_for in (HELD_A, HELD_B):
        summary = task_summary(made_for, ckpt.config["support"], ckpt.config["support_seed"]).unsqueeze(0)
        vectors = gen.sample(n, summary, seed=0)
        for scored_on in (HELD_A, HELD_B):
            acc[made_for, scored_on] = sum(_accuracy(cfg, gen.layout.unflatten(v), scored_on) for v in vectors) / n
    random_init = sum(_accuracy(cfg, _random_init_state(cfg, s), HELD_A) for s in (1, 2, 3)) / 3
    return {"A_on_A": acc[HELD_A, HELD_A], "A_on_B": acc[HELD_A, HELD_B], "B_on_B": acc[HELD_B, HELD_B],
            "B_on_A": acc[HELD_B, HELD_A], "random_init_on_A": random_init}


def beats_random_init(q: dict) -> bool:
    return q["A_on_A"] >= q["random_init_on_A"] + 0.3


def conditioned(q: dict) -> bool:
    """Weights made for A do worse on B than on A, and on each task the weights made for it
    beat those made for the other (a generator that ignores the task scores 0 there)."""
    return (q["A_on_A"] - q["A_on_B"] >= 0.3 and q["A_on_A"] - q["B_on_A"] >= 0.3
            and q["B_on_B"] - q["A_on_B"] >= 0.3)


@pytest.fixture(scope="module")
def d2nwg(small_zoo):
    from generators import frontend

    cat, _ = small_zoo
    frontend.d2nwg_train(cat, "zoo", "quality-gen", vae_steps=400, diffusion_steps=300, hidden=64)
    return cat, "quality-gen"


@pytest.mark.slow
def test_d2nwg_beats_random_init_on_a_held_out_task_and_follows_its_condition(d2nwg):
    q = d2nwg_quality(*d2nwg)
    print("d2nwg", q)
    assert beats_random_init(q), q
    assert conditioned(q), q


@pytest.mark.slow
def test_d2nwg_quality_checks_fail_for_a_gaussian_noise_generator(d2nwg, monkeypatch):
    monkeypatch.setattr(WeightGenerator, "sample", gaussian_sample)
    q = d2nwg_quality(*d2nwg)
    print("d2nwg, noise generator", q)
    assert not beats_random_init(q) and not conditioned(q), q


def pdiff_quality(cat, name: str, sampler=None, n: int = 10) -> dict:
    """p-diff samples (or `sampler(gen, collected, n)`'s vectors) on the base model's task:
    accuracy against the collected checkpoints' and against random init of the generated
    subset (three seeds); mean L2 distance to the nearest checkpoint against the
    checkpoints' own nearest-neighbour distance."""
    from generators.wgen.memorization import nearest_distance
    from generators.wgen.operators import load_generator

    ckpt = cat.open(name)
    gen, cfg, task = load_generator(ckpt), ckpt.config["target"], ckpt.config["task"]
    base = {k[len("base."):]: ckpt.get(k) for k in ckpt.names() if k.startswith("base.")}
    collected = ckpt.get("collected")
    vectors = sampler(gen, collected, n) if sampler else gen.sample(n, seed=0)

    def score(vectors) -> float:
        return sum(_accuracy(cfg, {**base, **gen.layout.unflatten(v)}, task) for v in vectors) / len(vectors)

    random_subset = [gen.layout.flatten(_random_init_state(cfg, s)) for s in (1, 2, 3)]
    return {"generated": score(vectors), "checkpoints": score(collected[:: max(1, len(collected) // 10)]),
            "random_init_subset": score(random_subset),
            "generated_to_nearest_checkpoint": nearest_distance(vectors, collected).mean().item(),
            "checkpoint_to_nearest_other": nearest_distance(collected, collected, exclude_self=True).mean().item()}


def pdiff_works(q: dict) -> bool:
    """At least halfway from random init of the subset to the checkpoints' accuracy."""
    return q["generated"] >= q["random_init_subset"] + 0.5 * (q["checkpoints"] - q["random_init_subset"])


def not_copies(q: dict) -> bool:
    """Farther from the nearest checkpoint than checkpoints are from each other (twice)."""
    return q["generated_to_nearest_checkpoint"] >= 2 * q["checkpoint_to_nearest_other"]


@pytest.fixture(scope="module")
def pdiff(small_zoo):
    from generators import frontend

    cat, _ = small_zoo
    frontend.pdiff_train(cat, "zoo-digits-0-4-s0", "digits:0-4", "quality-pd", checkpoints=50, vae_steps=300,
                         diffusion_steps=300, hidden=64)
    return cat, "quality-pd"


@pytest.mark.slow
def test_pdiff_samples_work_and_are_not_copies(pdiff):
    q = pdiff_quality(*pdiff)
    print("p-diff", q)
    assert pdiff_works(q) and not_copies(q), q


@pytest.mark.slow
def test_pdiff_quality_checks_fail_for_noise_and_for_copies(pdiff):
    noise = pdiff_quality(*pdiff, sampler=lambda gen, collected, n: gaussian_sample(gen, n))
    copies = pdiff_quality(*pdiff, sampler=lambda gen, collected, n: collected[torch.arange(n) * 3 % len(collected)])
    print("p-diff, noise generator", noise, "\np-diff, copying generator", copies)
    assert not pdiff_works(noise), noise
    assert not not_copies(copies) and pdiff_works(copies), copies
