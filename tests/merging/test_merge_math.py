"""Merge methods against independent truths: identities, hand-computed cases, and the
published properties of each method (pure tensors, no files)."""
from __future__ import annotations

import math

import pytest
import torch

from merging.apply import apply
from zoo.errors import ZooError

torch.manual_seed(0)
BASE = torch.randn(64, 48)
A = BASE + 0.1 * torch.randn(64, 48)
B = BASE + 0.1 * torch.randn(64, 48)


def test_task_arithmetic_lambda_zero_is_base():
    assert torch.equal(apply("task_arithmetic", BASE, [A, B], **{"lambda": 0.0}), BASE)


def test_task_arithmetic_one_model_weight_one_is_that_model():
    torch.testing.assert_close(apply("task_arithmetic", BASE, [A], weight=1.0), A, rtol=0, atol=1e-6)


def test_task_arithmetic_hand_computed_negation_and_scaling():
    base, a, b = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 2.0]), torch.tensor([1.0, 5.0])
    out = apply("task_arithmetic", base, [a, b], weight=[1.0, -0.5], **{"lambda": 2.0})
    # deltas (1,0) and (0,3); 1*(1,0) - 0.5*(0,3) = (1,-1.5); x2 -> (2,-3); + base
    assert torch.equal(out, torch.tensor([3.0, -1.0]))


def test_linear_is_weighted_average():
    out = apply("linear", None, [A, B], weight=[1.0, 3.0])
    torch.testing.assert_close(out, (A + 3 * B) / 4)
    with pytest.raises(ZooError, match="sum to 0"):
        apply("linear", None, [A, B], weight=[1.0, -1.0])


def test_ties_density_one_agreeing_signs_is_mean_delta():
    d1, d2 = torch.rand(50) + 0.1, torch.rand(50) + 0.1  # all positive: signs agree
    base = torch.randn(50)
    out = apply("ties", base, [base + d1, base + d2], weight=1.0, density=1.0)
    torch.testing.assert_close(out, base + (d1 + d2) / 2)


def test_ties_hand_computed():
    base = torch.zeros(4)
    a = torch.tensor([3.0, -1.0, 0.2, 2.0])
    b = torch.tensor([-1.0, -2.0, 0.1, 4.0])
    out = apply("ties", base, [a, b], weight=1.0, density=0.5)
    # trim to top-2 by |.|: a -> [3, 0, 0, 2], b -> [0, -2, 0, 4]
    # elected signs (sum): [+, -, 0->+, +]; disjoint mean over agreeing non-zero entries
    assert torch.equal(out, torch.tensor([3.0, -2.0, 0.0, 3.0]))


def test_dare_density_one_is_identity_and_drop_fraction():
    torch.testing.assert_close(apply("dare_linear", BASE, [A], density=1.0), A, rtol=0, atol=1e-6)
    delta = torch.ones(200_000)
    out = apply("dare_linear", torch.zeros_like(delta), [delta], density=0.3, rescale="none")
    assert abs((out == 0).float().mean().item() - 0.7) < 0.01  # drop fraction ~ p = 1 - density


def test_dare_inverse_rescale_is_unbiased_over_seeds():
    base, delta = torch.zeros(1000), torch.linspace(-1, 1, 1000)
    mean = sum(apply("dare_linear", base, [delta], density=0.5, seed=s) for s in range(400)) / 400
    assert (mean - delta).abs().mean() < 0.05


def test_dare_is_seeded_and_l1_rescale_keeps_l1_norm():
    one = apply("dare_ties", BASE, [A, B], density=0.5, seed=7)
    assert torch.equal(one, apply("dare_ties", BASE, [A, B], density=0.5, seed=7))
    assert not torch.equal(one, apply("dare_ties", BASE, [A, B], density=0.5, seed=8))
    out = apply("dare_linear", BASE, [A], density=0.4, rescale="l1")
    assert math.isclose((out - BASE).abs().sum().item(), (A - BASE).abs().sum().item(), rel_tol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_job_draws_are_uniform_and_seeded_by_key(dtype):
    """DARE's and DELLA's draws: the same key gives the same numbers in any order, another
    key or seed other numbers, all in [0, 1) and uniform (Kolmogorov-Smirnov distance)."""
    from merging.job import TensorJob

    job = TensorJob("w", (200_000,), None, [], [], {}, seed=3, dtype=dtype)
    first = job.uniform(200_000, "dare", 0, 0)
    other = job.uniform(200_000, "dare", 1, 0)
    assert first.dtype == dtype and torch.equal(first, job.uniform(200_000, "dare", 0, 0))
    assert not torch.equal(first, other)
    assert not torch.equal(first, TensorJob("w", (1,), None, [], [], {}, seed=4, dtype=dtype).uniform(200_000, "dare", 0, 0))
    x = first.double().sort().values
    assert 0 <= x[0] and x[-1] < 1
    ks = (x - torch.arange(1, x.numel() + 1, dtype=torch.float64) / x.numel()).abs().max()
    assert ks < 0.01  # ~0.004 for uniform draws of this size (bfloat16's rounding adds < 0.004)
    assert abs(float(torch.corrcoef(torch.stack([first.double(), other.double()]))[0, 1])) < 0.01


def test_chunked_streaming_equals_whole_tensor():
    for method, kw in [("ties", {"density": 0.3}), ("breadcrumbs", {"density": 0.6, "gamma": 0.05}),
                       ("dare_ties", {"density": 0.5, "rescale": "l1"}), ("widen", {}), ("model_stock", {}),
                       ("slerp", {"t": 0.4})]:
        models = [A] if method == "slerp" else [A, B]
        whole = apply(method, BASE, models, **kw)
        chunked = apply(method, BASE, models, chunk_elements=48 * 5, **kw)  # 5 rows per chunk
        if method == "dare_ties":  # masks are drawn per chunk: same law, different draw
            assert chunked.shape == whole.shape
            continue
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6, msg=method)


def test_slerp_endpoints_and_collinear():
    assert torch.equal(apply("slerp", BASE, [A], t=0.0), BASE)
    torch.testing.assert_close(apply("slerp", BASE, [A], t=1.0), A)
    torch.testing.assert_close(apply("slerp", BASE, [2 * BASE], t=0.5), 1.5 * BASE)  # collinear -> lerp


def test_slerp_keeps_unit_norm_on_the_sphere():
    x, y = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    mid = apply("slerp", x, [y], t=0.5)
    torch.testing.assert_close(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))


def test_breadcrumbs_drops_outliers_and_small():
    base = torch.zeros(100)
    delta = torch.arange(1.0, 101.0)
    out = apply("breadcrumbs", base, [delta], density=0.5, gamma=0.1)
    kept = out.nonzero().flatten() + 1
    # drop the top 10 and the bottom 40: keep 41..90
    assert kept.tolist() == list(range(41, 91))


def test_model_stock_orthogonal_offsets_give_the_base_ratio():
    base = torch.zeros(4)
    a, b = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0.0, 1, 0, 0])
    # cos = 0 -> t = 0 -> base
    assert torch.equal(apply("model_stock", base, [a, b]), base)
    # identical offsets: cos = 1 -> t = 1 -> the average
    torch.testing.assert_close(apply("model_stock", base, [a, a]), a)


def widen_reference(base, models, ratio=1.0, calib=1.0, embedding=False):
    """WIDEN written directly from the paper's description (whole tensors, no streaming)."""
    if base.dim() == 1:
        diff = torch.stack([(m - base).abs() for m in models])
        scores = torch.softmax(diff, 0)
        scores[diff > diff.mean(1, keepdim=True) * ratio] = calib
        return base + sum(s * (m - base) for s, m in zip(scores, models))
    t = (lambda x: x.T) if embedding else (lambda x: x)
    b = t(base)

    def mag_dir(w):
        mag = w.norm(dim=0)
        return mag, w / mag

    bm, bd = mag_dir(b)
    mdiff, ddiff = [], []
    for m in models:
        mm, md = mag_dir(t(m))
        mdiff.append((mm - bm).abs())
        ddiff.append(1 - torch.cosine_similarity(md, bd, dim=0))

    def rank(d):
        d = torch.stack(d)
        order = torch.argsort(d, dim=1, stable=True)
        sig = torch.zeros_like(d)
        return sig.scatter(1, order, (torch.arange(d.shape[1]) / d.shape[1]).repeat(d.shape[0], 1))

    def score(sig):
        s = torch.softmax(sig, 0)
        s[sig > sig.mean(1, keepdim=True) * ratio] = calib
        return s

    w = 0.5 * (score(rank(mdiff)) + score(rank(ddiff)))
    merged = b + sum(wi * (t(m) - b) for wi, m in zip(w, models))
    return t(merged)


@pytest.mark.parametrize("ratio,calib", [(1.0, 1.0), (1.2, 0.8)])
def test_widen_matches_the_papers_procedure(ratio, calib):
    kw = {"above_average_value_ratio": ratio, "score_calibration_value": calib}
    torch.testing.assert_close(apply("widen", BASE, [A, B], **kw), widen_reference(BASE, [A, B], ratio, calib),
                               rtol=1e-5, atol=1e-5)
    v = BASE[0]
    torch.testing.assert_close(apply("widen", v, [A[0], B[0]], **kw), widen_reference(v, [A[0], B[0]], ratio, calib))
    emb = apply("widen", BASE, [A, B], name="model.embed_tokens.weight", **kw)
    torch.testing.assert_close(emb, widen_reference(BASE, [A, B], ratio, calib, embedding=True), rtol=1e-5, atol=1e-5)


def test_widen_single_model_is_that_model_exactly():
    assert torch.equal(apply("widen", BASE, [A]), A)
    assert torch.equal(apply("widen", BASE[0], [A[0]]), A[0])


def test_widen_two_identical_models_is_not_the_model():
    # softmax gives 0.5 each, but above-average columns are calibrated to 1.0 for both: 2x delta there
    out = apply("widen", BASE, [A, A])
    ratio = ((out - BASE) / (A - BASE)).flatten()
    levels = torch.tensor([1.0, 1.5, 2.0])  # weight 0.5+0.5, 0.5+1 or 1+1 per column
    nearest = (ratio[:, None] - levels).abs().min(dim=1)
    assert (nearest.values < 1e-2).all()
    assert (nearest.indices == 2).any() and not torch.allclose(out, A)


def test_widen_disjoint_changes_keep_each_models_change():
    base = torch.randn(8, 6)
    a, b = base.clone(), base.clone()
    a[:, :3] += torch.randn(8, 3)  # model a changes columns 0-2, b columns 3-5
    b[:, 3:] += torch.randn(8, 3)
    out = apply("widen", base, [a, b])
    # every changed column is above its model's average significance -> calibrated weight 1
    torch.testing.assert_close(out[:, :3], a[:, :3])
    torch.testing.assert_close(out[:, 3:], b[:, 3:])


def test_widen_guards_zero_norm_columns():
    base = torch.zeros(4, 3)
    a = base.clone()
    a[:, 1] = 1.0
    out = apply("widen", base, [a, base.clone()])
    assert torch.isfinite(out).all()


def test_unknown_parameter_is_refused():
    with pytest.raises(ZooError, match="unknown parameter 'densty'"):
        apply("ties", BASE, [A], densty=0.5)


def test_ties_keeps_exactly_k_with_ties_taken_in_order():
    base = torch.zeros(6)
    delta = torch.tensor([1.0, -1.0, 1.0, 2.0, 1.0, 0.5])  # three-way tie at the threshold
    out = apply("ties", base, [delta], weight=1.0, density=0.5)  # k = 3: the 2, then the first two 1s
    assert torch.equal(out, torch.tensor([1.0, -1.0, 0.0, 2.0, 0.0, 0.0]))
    big = torch.randint(-3, 4, (3_000_000,)).float()  # a huge tensor full of ties (sampled selection)
    kept = apply("ties", torch.zeros_like(big), [big], weight=1.0, density=0.3)
    assert (kept != 0).sum().item() == int(0.3 * big.numel())


@pytest.mark.parametrize("values", ["continuous", "few distinct", "one value around the median"])
@pytest.mark.parametrize("n", [1000, 3 << 20])  # the in-memory partition and the bracketed pass
def test_select_gives_the_order_statistics_of_a_full_sort(n, values):
    """The value at each rank and the count of greater elements equal a full sort's; the
    bracketed pass has its own paths for a bracket of distinct values and one that is a
    single value (bfloat16 deltas: few distinct magnitudes)."""
    from merging.methods.sparsify import select

    g = torch.Generator().manual_seed(n)
    if values == "continuous":
        x = torch.randn(n, generator=g)
    elif values == "few distinct":
        x = torch.randint(0, 50, (n,), generator=g).float() / 7
    else:
        x = torch.randint(0, 3, (n,), generator=g).float()
    ranks = [0, n // 7, n // 2, n - 2, n - 1]
    ordered = x.sort().values
    expected = [(float(ordered[r]), int((x > ordered[r]).sum())) for r in ranks]
    assert select(x.clone(), ranks) == expected


@pytest.mark.parametrize("n", [1000, 3 << 20])  # the in-memory partition and the bracketed pass
def test_select_in_bfloat16_equals_select_over_the_same_values_in_float32(n):
    """numpy has no bfloat16: selection runs on order-preserving int16 keys, signs included,
    and gives back the tensor's values unchanged (reordered at most)."""
    from merging.methods.sparsify import select

    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g).to(torch.bfloat16)  # many ties, half negative
    ranks = [0, n // 7, n // 2, n - 2, n - 1]
    work = x.clone()
    assert select(work, ranks) == select(x.float(), ranks)
    assert torch.equal(work.sort().values, x.sort().values)


@pytest.mark.parametrize("n", [1000, 3 << 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_select_leaves_the_values_in_place(n, dtype):
    """SCE selects its variance threshold and then masks by the same buffer, so selection
    must leave it untouched (bfloat16 keys are flipped in place and back)."""
    from merging.methods.sparsify import select

    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g).to(dtype)
    ranks = [n // 3, n - 1]
    work = x.clone()
    assert select(work, ranks) == select(x.clone(), ranks)
    assert torch.equal(work, x)
