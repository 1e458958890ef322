"""mergekit 0.1.5's merge methods that weightzoo adds, each against mergekit's own code on the
same tiny checkpoints and YAML (run in process), in float32, and against a float64
reference where mergekit computes in float32; plus refusals of bad parameters.

Sections: nuslerp, multislerp, karcher, nearswap, arcee_fusion, passthrough (M1); della,
della_linear, sce, ram, ramplus_tl and the shared task-arithmetic parameters (M2)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from merging.apply import apply
from zoo import Checkpoint, save_tensors
from zoo.cli import main

from tests.helpers.models import tiny_llama

pytestmark = pytest.mark.slow  # every test here runs mergekit's own code beside ours

mergekit = pytest.importorskip("mergekit")


# ============================ M1: nuslerp, multislerp, karcher, nearswap, arcee_fusion, passthrough ===

def _ulp(x: torch.Tensor) -> float:
    """One float32 ulp at the tensor's largest magnitude."""
    top = float(x.abs().max()) if x.numel() else 0.0
    return float(torch.finfo(torch.float32).eps) * max(top, 1e-30)


# How close the whole-tensor spherical methods come to mergekit: the same formula, but mergekit
# reduces the flattened tensors (norms, dot products, the tangent vectors) in float32 and we in
# float64, so the coefficients differ by float32 rounding (about 1e-7 relative) and each output
# element by a few ulps of the tensor's scale. Measured: at most 2 ulps; allowed: 4.
SPHERICAL_ULPS = 4


@pytest.fixture(scope="module")
def quartet(tmp_path_factory):
    """A tiny Llama base and three 'fine-tunes' of it (noise of different seeds), as HF folders."""
    root = tmp_path_factory.mktemp("m1-models")
    tiny_llama().save_pretrained(root / "base")
    base = Checkpoint.open(root / "base")
    out = {"base": root / "base"}
    for k, seed in (("a", 1), ("b", 2), ("c", 3)):
        g = torch.Generator().manual_seed(seed)
        tensors = {n: base.get(n) + 0.02 * torch.randn(base.get(n).shape, generator=g) for n in base.names()}
        save_tensors(root / k, tensors, config=base.config)
        out[k] = root / k
    return out


def _mergekit(doc: dict, out: Path) -> Checkpoint:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    run_merge(MergeConfiguration.model_validate(doc), str(out),
              options=MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False))
    return Checkpoint.open(out)


def _zoo(doc: dict, tmp_path: Path, monkeypatch, name: str = "ours") -> Checkpoint:
    from zoo import Catalog

    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "c.db"))
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    assert main(["merge", str(cfg), "--out", name]) == 0
    return Catalog(tmp_path / "c.db").open(name)


def _doc(method: str, quartet, models: list[str], base: str | None = None, params: dict | None = None,
         model_params: list[dict] | None = None) -> dict:
    doc = {"merge_method": method, "dtype": "float32",
           "models": [{"model": str(quartet[m]), **({"parameters": model_params[i]} if model_params else {})}
                      for i, m in enumerate(models)]}
    if base:
        doc["base_model"] = str(quartet[base])
    if params:
        doc["parameters"] = params
    return doc


def _mergekit_tensor(method: str, tensors: list[torch.Tensor], base_index: int | None, parameters: dict):
    """mergekit's method on in-memory tensors (its own kernel, any dtype)."""
    from mergekit.merge_methods.base import TensorGroup
    from mergekit.merge_methods.registry import get

    (out,) = get(method)((TensorGroup.from_tensors(tensors, base_index=base_index),), parameters=parameters)
    return out


SPHERICAL_CASES = [
    pytest.param("nuslerp", ["a", "b"], None, {}, [{"weight": 0.3}, {"weight": 0.9}], id="nuslerp"),
    pytest.param("nuslerp", ["a", "b"], "base", {}, [{"weight": 0.6}, {"weight": 0.4}], id="nuslerp-base"),
    pytest.param("nuslerp", ["a", "b"], "base", {"nuslerp_flatten": False}, [{"weight": 1.0}, {"weight": 2.0}],
                 id="nuslerp-base-rows"),
    pytest.param("nuslerp", ["a", "b"], None, {"nuslerp_flatten": False, "nuslerp_row_wise": True},
                 [{"weight": 0.5}, {"weight": [0.2, 0.8]}], id="nuslerp-columns-gradient"),
    pytest.param("multislerp", ["a", "b", "c"], None, {}, [{"weight": 0.2}, {"weight": 0.5}, {"weight": 0.3}],
                 id="multislerp"),
    pytest.param("multislerp", ["a", "b", "c"], "base", {"normalize_weights": False, "eps": 1e-6},
                 [{"weight": 0.4}, {"weight": 0.4}, {"weight": 0.4}], id="multislerp-base"),
    pytest.param("karcher", ["a", "b", "c"], None, {}, None, id="karcher"),
    pytest.param("karcher", ["a", "b"], "base", {"max_iter": 3, "tol": 1e-6}, None, id="karcher-base-is-an-input"),
]


@pytest.mark.parametrize("method, models, base, params, model_params", SPHERICAL_CASES)
def test_spherical_methods_equal_mergekit_in_float32(tmp_path, monkeypatch, quartet, method, models, base, params,
                                                     model_params):
    doc = _doc(method, quartet, models, base, params, model_params)
    theirs = _mergekit(doc, tmp_path / "mk")
    ours = _zoo(doc, tmp_path, monkeypatch)
    assert set(ours.names()) == set(theirs.names())
    worst = 0.0
    for name in theirs.names():
        a, b = ours.get(name), theirs.get(name)
        assert a.dtype == b.dtype == torch.float32
        err = float((a.double() - b.double()).abs().max()) / _ulp(b)
        assert err <= SPHERICAL_ULPS, f"{name}: {err:.1f} ulps from mergekit"
        worst = max(worst, err)
    assert worst > 0 or method == "nuslerp"  # the comparison is not vacuous: float32 rounding shows somewhere


@pytest.mark.parametrize("method, models, base, params", [
    ("nuslerp", ["a", "b"], None, {"weight": [0.3, 0.9]}),
    ("nuslerp", ["a", "b"], "base", {"weight": [0.3, 0.9], "nuslerp_flatten": False}),
    ("nuslerp", ["a", "b"], "base", {"weight": [0.3, 0.9], "nuslerp_flatten": False, "nuslerp_row_wise": True}),
    ("multislerp", ["a", "b", "c"], None, {"weight": [0.2, 0.5, 0.3]}),
    ("multislerp", ["a", "b", "c"], "base", {"weight": [0.2, 0.5, 0.3]}),
    ("karcher", ["a", "b", "c"], None, {}),
])
def test_spherical_methods_against_a_float64_reference(quartet, method, models, base, params):
    """mergekit's own kernel on float64 inputs is the reference. Ours, streamed in chunks of two
    rows (so per-row and per-column statistics cross chunk boundaries), stays within 2 ulps of it
    on every tensor, and is never more than 1 ulp further from it than mergekit's float32 result."""
    cks = {k: Checkpoint.open(quartet[k]) for k in ("base", *models)}
    names = [n for n in cks["base"].names() if "layers.1" in n or "embed" in n or n == "model.norm.weight"]
    assert len(names) >= 8
    for name in names:
        ins = [cks[m].get(name) for m in models]
        b = cks[base].get(name) if base else None
        shape = ins[0].shape
        chunk = 2 * (shape[-1] if len(shape) > 1 else 1) if len(shape) > 1 else None
        ours = apply(method, b, ins, name=name, chunk_elements=chunk, **params)
        tensors = ([b] if base else []) + ins
        first = 1 if base else 0
        mk_params = {k: ({first + i: w for i, w in enumerate(v)} if k == "weight" else v) for k, v in params.items()}
        mk32 = _mergekit_tensor(method, tensors, 0 if base else None, mk_params)
        ref = _mergekit_tensor(method, [t.double() for t in tensors], 0 if base else None, mk_params)
        ulp = _ulp(ref)
        ours_err = float((ours.double() - ref).abs().max()) / ulp
        theirs_err = float((mk32.double() - ref).abs().max()) / ulp
        assert ours_err <= 2, f"{name}: {ours_err:.2f} ulps from the float64 reference"
        assert ours_err <= theirs_err + 1, f"{name}: ours {ours_err:.2f} ulps, mergekit {theirs_err:.2f}"


@pytest.mark.parametrize("method, models, base, params, model_params", [
    pytest.param("nearswap", ["a"], "base", {"t": 0.01}, None, id="nearswap"),
    pytest.param("nearswap", ["a"], "base", {"t": [0.0, 0.05]}, None, id="nearswap-gradient"),
    pytest.param("arcee_fusion", ["base", "a"], "base", {}, None, id="arcee_fusion-base-listed"),
    pytest.param("passthrough", ["a"], None, {}, None, id="passthrough"),
    pytest.param("passthrough", ["b"], None, {}, [{"scale": [{"filter": "mlp", "value": 0.5}, {"value": 1.25}]}],
                 id="passthrough-scale"),
])
def test_elementwise_methods_equal_mergekit_bitwise(tmp_path, monkeypatch, quartet, method, models, base, params,
                                                    model_params):
    """Elementwise methods (and arcee_fusion, whose threshold is exact order statistics below 1M
    elements) do mergekit's float32 operations in its order: equal bit for bit."""
    doc = _doc(method, quartet, models, base, params, model_params)
    theirs = _mergekit(doc, tmp_path / "mk")
    ours = _zoo(doc, tmp_path, monkeypatch)
    assert set(ours.names()) == set(theirs.names())
    changed = 0
    ref = Checkpoint.open(quartet[base or models[0]])
    for name in theirs.names():
        assert torch.equal(ours.get(name), theirs.get(name)), name
        changed += not torch.equal(ours.get(name), ref.get(name))
    if method != "passthrough" or model_params:
        assert changed > 0  # the method did something, so equality means something


def test_arcee_fusion_takes_only_the_outlier_changes(quartet):
    """Independent of mergekit: the kept elements are exactly those whose importance
    |delta| * KL(row) reaches median + 1.5 IQR (computed here with torch.quantile's 'lower'
    order statistic, mergekit's index)."""
    base = Checkpoint.open(quartet["base"]).get("model.layers.0.mlp.up_proj.weight")
    ft = Checkpoint.open(quartet["a"]).get("model.layers.0.mlp.up_proj.weight")
    p, q = torch.softmax(ft.double(), -1) + 1e-8, torch.softmax(base.double(), -1) + 1e-8
    imp = (ft.double() - base.double()).abs() * (p * (p / q).log()).sum(-1, keepdim=True)
    q1, med, q3 = torch.quantile(imp.flatten(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64),
                                 interpolation="lower")
    keep = imp >= med + 1.5 * (q3 - q1)
    out = apply("arcee_fusion", base, [ft], chunk_elements=64)
    assert 0 < int(keep.sum()) < keep.numel() // 4
    assert torch.equal(out != base, keep & (ft != base))


def test_nearswap_formula():
    base = torch.tensor([0.0, 0.0, 0.0, 1.0])
    other = torch.tensor([0.001, 0.5, -2.0, 1.0])
    # |diff| 0.001 <= t: fully swapped; 0.5: weight 0.01/0.5; 2.0: weight 0.005; equal: unchanged
    out = apply("nearswap", base, [other], t=0.01)
    torch.testing.assert_close(out, torch.tensor([0.001, 0.5 * 0.02, -2.0 * 0.005, 1.0]))


def test_karcher_of_two_unit_vectors_is_the_midpoint():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(apply("karcher", None, [a, b]), torch.tensor([0.5**0.5, 0.5**0.5]))
    # scaled by the mean norm
    torch.testing.assert_close(apply("karcher", None, [2 * a, 4 * b]), 3 * torch.tensor([0.5**0.5, 0.5**0.5]))


def test_nuslerp_t_from_weights_and_multislerp_of_one_model():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # t = w2 / (w1 + w2) = 1/3: the point 30 degrees from a on the unit circle
    torch.testing.assert_close(apply("nuslerp", None, [a, b], weight=[2.0, 1.0]),
                               torch.tensor([0.75**0.5, 0.5]))
    torch.testing.assert_close(apply("nuslerp", None, [a, b], weight=[1.0, -1.0]),  # sum ~0: t = 0.5
                               torch.tensor([0.5**0.5, 0.5**0.5]))
    assert torch.equal(apply("multislerp", torch.zeros(2), [b], weight=0.3), b)


def test_the_new_methods_stream_tensor_by_tensor():
    """Chunks of two rows give what a single chunk gives (statistics accumulate across chunks)."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 16, generator=g)
    ins = [base + 0.1 * torch.randn(40, 16, generator=g) for _ in range(3)]
    for method, b, models, params in [
        ("nuslerp", base, ins[:2], {"weight": [1, 2], "nuslerp_flatten": False}),
        ("nuslerp", None, ins[:2], {"weight": [1, 2], "nuslerp_flatten": False, "nuslerp_row_wise": True}),
        ("multislerp", base, ins, {"weight": [1, 2, 3]}), ("karcher", None, ins, {}),
        ("arcee_fusion", base, ins[:1], {}), ("nearswap", base, ins[:1], {"t": 0.05}),
    ]:
        whole = apply(method, b, models, **params)
        streamed = apply(method, b, models, chunk_elements=32, **params)
        torch.testing.assert_close(streamed, whole, rtol=0, atol=2 * _ulp(whole), msg=method)


@pytest.mark.parametrize("doc, needle", [
    ({"merge_method": "nuslerp", "models": ["a", "b", "c"], "parameters": {"weight": 1.0}},
     "merge.nuslerp takes"),
    ({"merge_method": "nuslerp", "models": ["a", "b"]}, "parameter 'weight' is required"),
    ({"merge_method": "nuslerp", "models": ["a", "b"], "parameters": {"weight": 1.0, "nuslerp_flatten": "sure"}},
     "nuslerp_flatten"),
    ({"merge_method": "nuslerp", "models": ["a", "b"], "parameters": {"weight": 1.0, "t": 0.5}},
     "unknown parameter 't'"),
    ({"merge_method": "multislerp", "models": ["a", "b"], "parameters": {"weight": 1.0, "eps": 0}},
     "parameter 'eps' = 0"),
    ({"merge_method": "multislerp", "models": [{"model": "a", "parameters": {"weight": 1.0}},
                                               {"model": "b", "parameters": {"weight": -1.0}}]},
     "sum to 0"),
    ({"merge_method": "karcher", "models": ["a", "b"], "parameters": {"max_iter": -1}}, "parameter 'max_iter' = -1"),
    ({"merge_method": "karcher", "models": ["a", "b"], "parameters": {"max_iter": 2.5}}, "max_iter"),
    ({"merge_method": "karcher", "models": ["a", "b"], "parameters": {"tol": 0}}, "parameter 'tol' = 0"),
    ({"merge_method": "karcher", "models": ["a", "b"], "parameters": {"weight": 0.5}}, "unknown parameter 'weight'"),
    ({"merge_method": "nearswap", "base_model": "base", "models": ["a"], "parameters": {"t": -0.1}},
     "parameter 't' = -0.1"),
    ({"merge_method": "nearswap", "base_model": "base", "models": ["a"]}, "parameter 't' is required"),
    ({"merge_method": "nearswap", "models": ["a"], "parameters": {"t": 0.1}}, "needs a base model"),
    ({"merge_method": "nearswap", "base_model": "base", "models": ["a", "b"], "parameters": {"t": 0.1}},
     "merge.nearswap takes"),
    ({"merge_method": "arcee_fusion", "base_model": "base", "models": ["a", "b"]}, "merge.arcee_fusion takes"),
    ({"merge_method": "arcee_fusion", "base_model": "base", "models": ["a"], "parameters": {"density": 0.5}},
     "unknown parameter 'density'"),
    ({"merge_method": "passthrough", "models": ["a", "b"]}, "merge.passthrough takes"),
    ({"merge_method": "passthrough", "models": [{"model": "a", "parameters": {"scale": "big"}}]}, "scale"),
])
def test_bad_parameters_are_refused_in_one_line_with_nothing_registered(tmp_path, monkeypatch, capsys, quartet, doc,
                                                                       needle):
    from zoo import Catalog

    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "c.db"))

    def ref(r):
        return str(quartet[r]) if isinstance(r, str) else {**r, "model": str(quartet[r["model"]])}

    doc = {**doc, "models": [ref(m) for m in doc["models"]]}
    if "base_model" in doc:
        doc["base_model"] = str(quartet[doc["base_model"]])
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    assert main(["merge", str(cfg), "--out", "bad"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not (tmp_path / "c.db").exists() or Catalog(tmp_path / "c.db").ls() == []

def test_optional_base_by_flags_and_lineage(tmp_path, monkeypatch, quartet):
    """nuslerp and multislerp take a base or none: with --base it is recorded as the base and
    the offsets are interpolated; without, the models themselves."""
    from zoo import Catalog

    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "c.db"))
    a, b, base = (str(quartet[k]) for k in ("a", "b", "base"))
    common = ["merge", "--method", "nuslerp", "--model", a, "--model", b, "--weight", "1", "--weight", "3"]
    assert main([*common, "--out", "plain"]) == 0
    assert main([*common, "--base", base, "--out", "offsets"]) == 0
    cat = Catalog(tmp_path / "c.db")
    roles = {n: sorted(e.role for e, _ in cat.parents(cat.get(n))) for n in ("plain", "offsets")}
    assert roles == {"plain": ["input", "input"], "offsets": ["base", "input", "input"]}
    name = "model.layers.0.mlp.down_proj.weight"
    x, y, z = (Checkpoint.open(quartet[k]).get(name) for k in ("a", "b", "base"))
    torch.testing.assert_close(cat.open("plain").get(name), apply("nuslerp", None, [x, y], weight=[1, 3]))
    torch.testing.assert_close(cat.open("offsets").get(name), apply("nuslerp", z, [x, y], weight=[1, 3]))
    assert not torch.allclose(cat.open("plain").get(name), cat.open("offsets").get(name))


def test_arcee_fusion_quartiles_are_exact_above_a_million_elements():
    """mergekit estimates the quartiles of a tensor over 1M elements from a random unseeded
    sample; here they are the exact order statistics of the whole tensor (deterministic):
    checked against a full sort, on a tensor streamed in chunks."""
    from mergekit.merge_methods.arcee_fusion import _compute_importance

    g = torch.Generator().manual_seed(0)
    base = torch.randn(1100, 1000, generator=g)
    ft = base + 0.05 * torch.randn(1100, 1000, generator=g)
    imp = _compute_importance(ft, base)  # mergekit's importance, float32
    ordered = imp.flatten().sort().values
    n = ordered.numel()
    assert n > 1 << 20
    q1, med, q3 = ordered[(n - 1) // 4], ordered[(n - 1) // 2], ordered[3 * (n - 1) // 4]
    expect = base + (ft - base) * (imp >= med + 1.5 * (q3 - q1)).float()
    out = apply("arcee_fusion", base, [ft], chunk_elements=100_000)
    assert torch.equal(out, expect)
    assert 0 < int((out != base).sum()) < n // 10


@pytest.fixture(scope="module")
def quartet_bf16(tmp_path_factory, quartet):
    """The same models stored in bfloat16 (so every reading of them sees the same values)."""
    root = tmp_path_factory.mktemp("m1-bf16")
    out = {}
    for k, path in quartet.items():
        ck = Checkpoint.open(path)
        save_tensors(root / k, {n: ck.get(n).to(torch.bfloat16) for n in ck.names()}, config=ck.config)
        out[k] = root / k
    return out


def _bf16_ulps(ref: torch.Tensor) -> torch.Tensor:
    """One bfloat16 ulp at each element of a float64 tensor."""
    exponent = torch.frexp(ref.abs().clamp(min=1e-30))[1]
    return torch.ldexp(torch.ones_like(ref), exponent - 8)


@pytest.mark.parametrize("method, models, base, params, weights", [
    ("karcher", ["a", "b", "c"], None, {}, None),
    ("multislerp", ["a", "b", "c"], "base", {}, [0.2, 0.5, 0.3]),
    ("nuslerp", ["a", "b"], "base", {}, [0.3, 0.7]),
    ("nuslerp", ["a", "b"], None, {"nuslerp_flatten": False}, [0.3, 0.7]),
])
def test_spherical_methods_in_bfloat16_against_a_float64_reference(tmp_path, monkeypatch, quartet_bf16, method, models,
                                                                   base, params, weights):
    """With `dtype: bfloat16` mergekit does the whole computation in bfloat16. The reference is
    mergekit's kernel on the same inputs in float64. With mergekit's meaning of dtype (the math
    in bfloat16) ours has fewer elements more than 1 bf16 ulp off it than mergekit (its
    statistics are float64); with `compute_dtype=float32`, none (measured: 2.4k/5.1k/5.0k/4.5k
    vs mergekit's 7.4k/8.1k/5.5k/5.9k of 24.7k; 0 with float32 math)."""
    from zoo import Catalog

    doc = _doc(method, quartet_bf16, models, base, params, [{"weight": w} for w in weights] if weights else None)
    doc["dtype"] = "bfloat16"
    theirs = _mergekit(doc, tmp_path / "mk")
    ours = _zoo(doc, tmp_path, monkeypatch)
    assert main(["merge", str(tmp_path / "ours.yaml"), "--set", "compute_dtype=float32", "--out", "f32"]) == 0
    f32 = Catalog(tmp_path / "c.db").open("f32")
    off = {"ours": 0, "mergekit": 0, "f32": 0}
    cks = {k: Checkpoint.open(quartet_bf16[k]) for k in ("base", *models)}
    for name in theirs.names():
        tensors = ([cks[base].get(name).double()] if base else []) + [cks[m].get(name).double() for m in models]
        first = 1 if base else 0
        mk_params = {**params, **({"weight": {first + i: w for i, w in enumerate(weights)}} if weights else {})}
        ref = _mergekit_tensor(method, tensors, 0 if base else None, mk_params)
        ulps = _bf16_ulps(ref)
        for key, ck in (("ours", ours), ("mergekit", theirs), ("f32", f32)):
            out = ck.get(name)
            assert out.dtype == torch.bfloat16
            off[key] += int(((out.double() - ref).abs() > ulps).sum())
    assert off["f32"] == 0, off
    assert off["ours"] < off["mergekit"], off


def test_arcee_fusion_example_in_bfloat16(tmp_path, monkeypatch, quartet_bf16):
    """mergekit's examples/arcee_fusion.yml (dtype: bfloat16, the base also listed as a model).
    mergekit computes in bfloat16 but its float32 mask promotes the result, so it writes a float32
    model; ours is written in the dtype asked, and equals mergekit's values rounded to it."""
    doc = {"models": [{"model": str(quartet_bf16["base"])}, {"model": str(quartet_bf16["a"])}],
           "merge_method": "arcee_fusion", "base_model": str(quartet_bf16["base"]), "dtype": "bfloat16"}
    theirs = _mergekit(doc, tmp_path / "mk")
    ours = _zoo(doc, tmp_path, monkeypatch)
    base = Checkpoint.open(quartet_bf16["base"])
    changed = 0
    for name in theirs.names():
        assert ours.get(name).dtype == torch.bfloat16
        assert torch.equal(ours.get(name), theirs.get(name).to(torch.bfloat16)), name
        changed += not torch.equal(ours.get(name), base.get(name))
    assert changed > 0


# ============================ M2: della, della_linear, sce, ram, ramplus_tl; int8_mask, rescale =========
# Deterministic methods (ram, ramplus_tl, sce, ties/breadcrumbs with rescale, int8_mask) run through
# `zoo merge` and through mergekit on the same YAML. DELLA draws random masks (mergekit from torch's
# global generator, we from a seeded one per tensor, model and chunk), so it is compared with the
# same uniform field injected into both (mergekit's torch.bernoulli and our draw), and its keep
# probabilities are checked against mergekit's and against the formula, by rank.

# Where we are not bitwise equal to mergekit: whole-tensor sums (the L1 `rescale` norms, SCE's
# energies) are taken here chunk by chunk and added in float64, mergekit sums the whole float32
# tensor, so the one scale factor per tensor (and model) differs by float32 rounding and each
# element by about an ulp. Measured: at most 2 ulps of the tensor's largest magnitude; allowed: 4.
SUM_ULPS = 4


@pytest.fixture(scope="module")
def sparse_quartet(quartet, tmp_path_factory):
    """Base and three fine-tunes that each change a different random 40% of the elements (so
    elements are changed by none, one or several models: what RAM tells apart)."""
    root = tmp_path_factory.mktemp("m2-models")
    base = Checkpoint.open(quartet["base"])
    out = {"base": quartet["base"]}
    for k, seed in (("s1", 11), ("s2", 12), ("s3", 13)):
        g = torch.Generator().manual_seed(seed)
        tensors = {}
        for n in base.names():
            t = base.get(n)
            changed = torch.rand(t.shape, generator=g) < 0.4
            tensors[n] = t + changed * 0.02 * torch.randn(t.shape, generator=g)
        save_tensors(root / k, tensors, config=base.config)
        out[k] = root / k
    return {**quartet, **out}


def _ulps_apart(ours: Checkpoint, theirs: Checkpoint) -> tuple[float, int]:
    """(largest difference in ulps of each tensor's largest magnitude, tensors not bitwise equal)."""
    assert set(ours.names()) == set(theirs.names())
    worst, unequal = 0.0, 0
    for name in theirs.names():
        a, b = ours.get(name), theirs.get(name)
        assert a.dtype == b.dtype == torch.float32, name
        worst = max(worst, float((a.double() - b.double()).abs().max()) / _ulp(b))
        unequal += not torch.equal(a, b)
    return worst, unequal


M2_DETERMINISTIC = [
    pytest.param("ram", ["s1", "s2", "s3"], {}, None, 0, id="ram"),
    pytest.param("ram", ["s1", "s2"], {"epsilon": 0.01}, None, 0, id="ram-epsilon"),
    pytest.param("ramplus_tl", ["s1", "s2", "s3"], {}, None, 0, id="ramplus_tl"),
    pytest.param("ramplus_tl", ["s1", "s2"], {"r": 0.5, "alpha": 0.8, "epsilon": 0.005}, None, 0,
                 id="ramplus_tl-settings"),
    pytest.param("sce", ["a", "b", "c"], {}, None, SUM_ULPS, id="sce"),
    pytest.param("sce", ["a", "b", "c"], {"select_topk": 0.4, "int8_mask": True}, None, SUM_ULPS, id="sce-select"),
    pytest.param("sce", ["s1", "s2"], {"select_topk": [0.2, 0.9]}, None, SUM_ULPS, id="sce-sparse-gradient"),
    pytest.param("ties", ["a", "b"], {"rescale": True, "int8_mask": True},
                 [{"weight": 0.7, "density": 0.4}, {"weight": 0.5, "density": [0.3, 0.8]}], SUM_ULPS,
                 id="ties-rescale"),
    pytest.param("ties", ["a", "b"], {"int8_mask": True}, [{"weight": 0.7, "density": 0.4}, {"weight": 0.5,
                                                                                            "density": 0.6}], 0,
                 id="ties-int8_mask"),
    pytest.param("breadcrumbs_ties", ["a", "b"], {"rescale": True},
                 [{"weight": 0.6, "density": 0.7, "gamma": 0.05}, {"weight": 0.6, "density": 0.5}], SUM_ULPS,
                 id="breadcrumbs_ties-rescale"),
    pytest.param("task_arithmetic", ["a", "b"], {"rescale": True, "int8_mask": True, "lambda": 0.8},
                 [{"weight": 0.6, "density": 0.5}, {"weight": 0.3}], 2, id="task_arithmetic-accepts-all"),
]


@pytest.mark.parametrize("method, models, params, model_params, ulps", M2_DETERMINISTIC)
def test_m2_deterministic_methods_equal_mergekit(tmp_path, monkeypatch, sparse_quartet, method, models, params,
                                                 model_params, ulps):
    """RAM's are elementwise with mergekit's float32 operations in its order: bit for bit. SCE
    and the L1 rescale differ only by their whole-tensor sums (SUM_ULPS). task_arithmetic takes
    `density`, `rescale` and `int8_mask` as mergekit does (no effect there); it computes
    base * (1 - sum c_i) + sum c_i * model_i in one pass, within 2 ulps of mergekit's order."""
    doc = _doc(method, sparse_quartet, models, "base", params, model_params)
    theirs = _mergekit(doc, tmp_path / "mk")
    ours = _zoo(doc, tmp_path, monkeypatch)
    worst, unequal = _ulps_apart(ours, theirs)
    assert worst <= ulps, f"{worst:.2f} ulps from mergekit"
    base = Checkpoint.open(sparse_quartet["base"])
    assert sum(not torch.equal(ours.get(n), base.get(n)) for n in base.names()) > len(base.names()) // 2
    if ulps == 0:
        assert unequal == 0


def _field(start: int, count: int) -> torch.Tensor:
    """A fixed 'uniform' field by flat element position (a low-discrepancy sequence), float64."""
    k = torch.arange(start, start + count, dtype=torch.float64)
    return torch.frac(k * 0.6180339887498949 + 0.1234)


def _inject_field(monkeypatch):
    """Our draws and mergekit's torch.bernoulli both read _field at each element's position."""
    import merging.methods.della as della

    monkeypatch.setattr(della, "_uniform", lambda job, i, chunk, start, count: _field(start, count))
    monkeypatch.setattr(torch, "bernoulli", lambda p: (_field(0, p.numel()).view(p.shape) < p).to(p.dtype))


@pytest.mark.parametrize("method, params, model_params, ulps", [
    pytest.param("della", {"rescale": False}, [{"weight": 0.7, "density": 0.5, "epsilon": 0.2},
                                               {"weight": 0.4, "density": 0.3}], 0, id="della"),
    pytest.param("della", {}, [{"weight": 0.7, "density": 0.6}, {"weight": 0.4, "density": [0.3, 0.7],
                                                                 "epsilon": 0.1}], SUM_ULPS, id="della-rescale"),
    pytest.param("della_linear", {"lambda": 0.9, "normalize": True}, [{"weight": 0.5, "density": 0.5},
                                                                      {"weight": 0.5, "density": 0.4}], SUM_ULPS,
                 id="della_linear"),
    pytest.param("della_linear", {"rescale": False}, [{"weight": 1.0, "density": 0.8, "epsilon": 0.05},
                                                      {"weight": -0.5, "density": 0.5, "epsilon": 0.45}], 0,
                 id="della_linear-no-rescale"),
])
def test_della_equals_mergekit_with_the_same_draws(tmp_path, monkeypatch, quartet, method, params, model_params, ulps):
    """With the same uniform field injected, our DELLA (ranks within rows, keep probabilities,
    masks, rescale, sign election) is mergekit's: bit for bit without rescale, within SUM_ULPS
    with the L1 rescale."""
    doc = _doc(method, quartet, ["a", "b"], "base", params, model_params)
    _inject_field(monkeypatch)
    theirs = _mergekit(doc, tmp_path / "mk")
    ours = _zoo(doc, tmp_path, monkeypatch)
    worst, unequal = _ulps_apart(ours, theirs)
    assert worst <= ulps, f"{worst:.2f} ulps from mergekit"
    if ulps == 0:
        assert unequal == 0
    # the masks dropped something: the output is not plain task arithmetic
    plain = [{**m, "parameters": {"weight": m["parameters"]["weight"]}} for m in doc["models"]]
    ta = _zoo({**doc, "merge_method": "task_arithmetic", "parameters": {}, "models": plain}, tmp_path, monkeypatch,
              "ta")
    assert any(not torch.equal(ours.get(n), ta.get(n)) for n in ta.names())


def test_della_keep_probabilities_are_mergekits_and_the_formula(monkeypatch):
    """Independent of any draw: the probability each element is kept with equals, bit for bit,
    the one mergekit hands to torch.bernoulli, and the paper's formula by rank in float64; then
    over 400 seeds each rank is kept at that rate (within 5 binomial standard deviations)."""
    from mergekit.sparsify import della_magprune

    from merging.methods.della import keep_probabilities

    g = torch.Generator().manual_seed(0)
    n, rows, density, epsilon = 41, 24, 0.45, 0.3
    delta = torch.stack([(torch.randperm(n, generator=g).float() + 1) * 0.01 * torch.sign(torch.randn(n, generator=g))
                         for _ in range(rows)])
    seen = []
    monkeypatch.setattr(torch, "bernoulli", lambda p: seen.append(p.clone()) or torch.ones_like(p))
    della_magprune(delta, density, epsilon)
    ours = keep_probabilities(delta.reshape(-1), tuple(delta.shape), density, epsilon).view(rows, n)
    assert torch.equal(ours, seen[0])
    rank = delta.abs().argsort(dim=1).argsort(dim=1).double()  # distinct magnitudes: one ranking
    formula = (density - epsilon) + 2 * epsilon * rank / (n - 1)
    torch.testing.assert_close(ours.double(), formula, rtol=0, atol=1e-7)
    assert abs(float(ours.double().mean()) - density) < 1e-7
    # the general path (other dtypes, tensors of 3+ axes, GPUs: a stable torch sort) agrees
    wide = keep_probabilities(delta.double().reshape(-1), tuple(delta.shape), density, epsilon).view(rows, n)
    torch.testing.assert_close(wide, formula, rtol=0, atol=1e-12)
    monkeypatch.undo()

    seeds = 400
    kept = torch.zeros(rows, n, dtype=torch.float64)
    for seed in range(seeds):
        out = apply("della_linear", torch.zeros_like(delta), [delta], density=density, epsilon=epsilon,
                    rescale=False, seed=seed)
        kept += (out != 0).double()
    by_rank = torch.zeros(n, dtype=torch.float64).index_add_(0, rank.long().view(-1), kept.view(-1)) / (rows * seeds)
    expect = (density - epsilon) + 2 * epsilon * torch.arange(n, dtype=torch.float64) / (n - 1)
    sigma = (expect * (1 - expect) / (rows * seeds)).sqrt()
    assert ((by_rank - expect).abs() <= 5 * sigma).all(), (by_rank - expect).abs().max()
    assert by_rank[-1] > by_rank[0] + epsilon  # larger magnitudes are kept more often


def test_della_rescale_modes():
    """l1 (default): the kept deltas carry the whole task vector's L1 norm; inverse: each kept
    element divided by its keep probability; false: kept as is. Same seed, same mask."""
    from merging.methods.della import keep_probabilities

    g = torch.Generator().manual_seed(1)
    base, delta = torch.zeros(16, 64), 0.01 * torch.randn(16, 64, generator=g)
    kw = dict(density=0.4, epsilon=0.2, seed=3)
    plain = apply("della_linear", base, [base + delta], rescale=False, **kw) - base
    l1 = apply("della_linear", base, [base + delta], **kw) - base
    inverse = apply("della_linear", base, [base + delta], rescale="inverse", **kw) - base
    mask = plain != 0
    assert 0.3 < float(mask.double().mean()) < 0.5 and torch.equal(l1 != 0, mask) and torch.equal(inverse != 0, mask)
    torch.testing.assert_close(l1.abs().sum(), delta.abs().sum(), rtol=1e-5, atol=0)
    p = keep_probabilities(delta.reshape(-1), tuple(delta.shape), 0.4, 0.2).view(delta.shape)
    torch.testing.assert_close(inverse[mask], (delta / p)[mask], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(plain[mask], delta[mask], rtol=1e-5, atol=1e-7)
    # seeded: the same seed gives the same merge, another seed another mask
    assert torch.equal(apply("della_linear", base, [base + delta], **kw) - base, l1)
    assert not torch.equal(apply("della_linear", base, [base + delta], **{**kw, "seed": 4}) - base != 0, mask)


@pytest.mark.parametrize("method, params", [
    ("sce", {}), ("sce", {"select_topk": 0.3}), ("ram", {}), ("ramplus_tl", {"r": 0.4, "alpha": 0.5}),
    ("ties", {"density": 0.4, "rescale": True}), ("breadcrumbs", {"density": 0.6, "gamma": 0.1, "rescale": True}),
])
def test_m2_methods_against_a_float64_reference(sparse_quartet, method, params):
    """mergekit's own kernel on float64 inputs is the reference: ours (float32, streamed in
    chunks of two rows) stays within 2 ulps of it and never more than 1 ulp further than
    mergekit's float32 result."""
    cks = {k: Checkpoint.open(sparse_quartet[k]) for k in ("base", "s1", "s2", "s3")}
    names = [n for n in cks["base"].names() if "layers.1" in n or "embed" in n]
    for name in names:
        b, ins = cks["base"].get(name), [cks[k].get(name) for k in ("s1", "s2", "s3")]
        chunk = 2 * b.shape[-1] if b.dim() > 1 else None
        ours = apply(method, b, ins, name=name, chunk_elements=chunk, **params)
        mk_params = {k: ({1 + i: v for i in range(3)} if k in ("density", "gamma", "weight") else v)
                     for k, v in params.items()}
        if method in ("ties", "breadcrumbs"):
            mk_params["weight"] = {1 + i: 1.0 for i in range(3)}
        mk32 = _mergekit_tensor(method, [b, *ins], 0, mk_params)
        ref = _mergekit_tensor(method, [t.double() for t in (b, *ins)], 0, mk_params)
        ulp = _ulp(ref)
        ours_err = float((ours.double() - ref).abs().max()) / ulp
        theirs_err = float((mk32.double() - ref).abs().max()) / ulp
        assert ours_err <= 2, f"{name}: {ours_err:.2f} ulps from the float64 reference"
        assert ours_err <= theirs_err + 1, f"{name}: ours {ours_err:.2f} ulps, mergekit {theirs_err:.2f}"


def test_ram_formula_by_hand():
    """One element changed by nobody, by one model, by two (averaged), by three; RAM+ raises the
    unique changes of each model by 1 + r * min(shared/unique, alpha)."""
    base = torch.zeros(4)
    a = torch.tensor([0.0, 0.3, 0.2, 0.6])
    b = torch.tensor([0.0, 0.0, 0.4, 0.3])
    c = torch.tensor([0.0, 0.0, 0.0, 0.0 + 0.9])
    torch.testing.assert_close(apply("ram", base, [a, b, c]),
                               torch.tensor([0.0, 0.3, (0.2 + 0.4) / 2, (0.6 + 0.3 + 0.9) / 3]))
    # a: 1 unique, 2 shared -> rho 2 -> clamp 0.2 -> lambda 1.02; b: 0 unique; c: 0 unique
    out = apply("ramplus_tl", base, [a, b, c], r=0.1, alpha=0.2)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.3 * 1.02, 0.3, 0.6]))
    # epsilon: changes at or below it do not count
    torch.testing.assert_close(apply("ram", base, [a, b], epsilon=0.35), torch.tensor([0.0, 0.0, 0.4, 0.6]))


def test_sce_by_hand():
    """Two models: the higher-energy one weighs more; a sign conflict erases the minority."""
    base = torch.zeros(4)
    a = torch.tensor([0.2, 0.2, 0.2, -0.1])
    b = torch.tensor([0.4, 0.4, -0.4, 0.2])
    wa, wb = float((a**2).mean()), float((b**2).mean())
    wa, wb = wa / (wa + wb), wb / (wa + wb)
    expect = torch.tensor([(wa * 0.2 + wb * 0.4) / (wa + wb)] * 2 + [-0.4, 0.2])  # sums: 0.6, 0.6, -0.2, 0.1
    torch.testing.assert_close(apply("sce", base, [a, b]), expect)
    # select_topk 0.5: only the two elements of largest variance across the models survive
    out = apply("sce", base, [a, b], select_topk=0.5)
    assert torch.equal(out[:2], torch.zeros(2)) and (out[2:] != 0).all()


@pytest.mark.parametrize("chunk", [None, 7, 64])
def test_sce_selects_exactly_k_with_ties_taken_in_order_across_chunks(chunk):
    """Variances full of ties at the threshold: exactly k elements survive, the tied ones
    first in position, whatever the chunking (ties straddle chunk borders)."""
    a = torch.tensor([1.0, 2.0, 1.0, 0.0, 1.0, 3.0, 1.0, 1.0, 2.0, 1.0] * 30)
    b = torch.zeros_like(a)  # variance (a/2)^2: 1/4 ties everywhere; b never agrees (0)
    out = apply("sce", torch.zeros_like(a), [a, b], select_topk=0.5, chunk_elements=chunk)
    k = int(torch.count_nonzero(a) * 0.5)  # 135 of the 270 non-zero variances
    assert torch.count_nonzero(out) == k
    above = a > 1
    assert torch.equal(out[above], a[above])  # every 2 and 3 (90 of them) is kept...
    tied = torch.nonzero(a == 1).flatten()
    kept_ties = tied[:k - int(above.sum())]
    assert torch.equal(out[kept_ties], a[kept_ties])  # ...then the first 45 ones
    assert torch.count_nonzero(out[tied[len(kept_ties):]]) == 0


@pytest.mark.parametrize("n, chunk, dtype", [(300, None, torch.float32), (300, 7, torch.float32),
                                             (300, 64, torch.bfloat16), (3 << 20, None, torch.float32)])
def test_ties_keeps_exactly_k_with_ties_taken_in_order_across_chunks(n, chunk, dtype):
    """Magnitudes full of ties at the threshold: exactly k survive, everything above it and
    then the tied ones in order of position, whatever the chunking (the cut falls inside a
    chunk) and size (3M elements: the sampled selection)."""
    g = torch.Generator().manual_seed(n)
    a = torch.randint(-3, 4, (n,), generator=g).float()
    out = apply("ties", torch.zeros_like(a), [a], weight=1.0, density=0.4, chunk_elements=chunk, dtype=dtype)
    k = int(0.4 * n)
    assert torch.count_nonzero(out) == k
    magnitude = a.abs()
    threshold = magnitude.sort(descending=True).values[k - 1]
    above = magnitude > threshold
    tied = torch.nonzero(magnitude == threshold).flatten()
    expected = torch.where(above, a, 0.0)
    kept_ties = tied[: k - int(above.sum())]
    expected[kept_ties] = a[kept_ties]
    assert torch.equal(out.float(), expected)


@pytest.mark.parametrize("method, params", [
    ("task_arithmetic", {"weight": 0.5}), ("ties", {"density": 0.5, "weight": 0.5}),
    ("breadcrumbs", {"density": 0.5, "gamma": 0.01, "weight": 0.5}), ("sce", {"select_topk": 0.5}),
    ("della", {"density": 0.5, "weight": 0.5}), ("dare_ties", {"density": 0.5, "weight": 0.5}),
])
def test_models_are_cast_to_the_math_dtype_before_subtracting(method, params):
    """float32 models merged with bfloat16 math: the models are rounded to bfloat16 first
    (mergekit's order), so the result equals merging the pre-rounded models (TIES and
    breadcrumbs once selected on float32 differences rounded once, 188 and 61 elements off)."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(64, 32, generator=g)
    ins = [base + 0.01 * torch.randn(64, 32, generator=g) for _ in range(2)]
    rounded = [t.to(torch.bfloat16).to(torch.float32) for t in (base, *ins)]
    got = apply(method, base, ins, dtype=torch.bfloat16, **params)
    want = apply(method, rounded[0], rounded[1:], dtype=torch.bfloat16, **params)
    assert torch.equal(got, want)


def test_m2_methods_stream_tensor_by_tensor(monkeypatch):
    """Chunks of two rows give what one chunk gives: SCE's energies, RAM+'s counts and DELLA's
    row ranks (with the draws fixed by position) accumulate across chunks."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(40, 16, generator=g)
    ins = [base + 0.1 * torch.randn(40, 16, generator=g) * (torch.rand(40, 16, generator=g) < 0.5) for _ in range(3)]
    import merging.methods.della as della

    monkeypatch.setattr(della, "_uniform", lambda job, i, chunk, start, count: _field(start, count))
    for method, params in [("sce", {"select_topk": 0.5}), ("ram", {}), ("ramplus_tl", {}),
                           ("della", {"density": 0.5}), ("della_linear", {"density": 0.3, "rescale": "inverse"}),
                           ("ties", {"density": 0.3, "rescale": True})]:
        whole = apply(method, base, ins, **params)
        streamed = apply(method, base, ins, chunk_elements=32, **params)
        torch.testing.assert_close(streamed, whole, rtol=0, atol=2 * _ulp(whole), msg=method)


def test_int8_mask_changes_nothing():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(8, 32, generator=g)
    ins = [base + 0.1 * torch.randn(8, 32, generator=g) for _ in range(3)]
    for method, params in [("ties", {"density": 0.5}), ("dare_ties", {"density": 0.5}), ("della", {"density": 0.5}),
                           ("breadcrumbs_ties", {"density": 0.5}), ("sce", {"select_topk": 0.5})]:
        assert torch.equal(apply(method, base, ins, int8_mask=True, **params), apply(method, base, ins, **params))


@pytest.mark.parametrize("doc, needle", [
    ({"merge_method": "della", "models": ["a"], "parameters": {"epsilon": 0.6}},
     "parameter 'epsilon' = 0.6 is out of range: must be >= 0 and < 0.5"),
    ({"merge_method": "della", "models": ["a"], "parameters": {"density": 0.1}},
     "della: epsilon 0.15 with density 0.1 (model 1, tensor "),
    ({"merge_method": "della_linear", "models": [{"model": "a", "parameters": {
        "density": [{"filter": "mlp", "value": 0.9}, {"value": 0.5}], "epsilon": 0.1}}]},
     "epsilon 0.1 with density 0.9 (model 1, tensor model.layers.0.mlp"),
    ({"merge_method": "della", "models": ["a"], "parameters": {"rescale": "l2"}}, "parameter 'rescale' = 'l2'"),
    ({"merge_method": "della", "models": ["a"], "parameters": {"epsilon": -0.1}}, "parameter 'epsilon' = -0.1"),
    ({"merge_method": "sce", "models": ["a", "b"], "parameters": {"select_topk": 1.5}},
     "parameter 'select_topk' = 1.5 is out of range: must be >= 0 and <= 1"),
    ({"merge_method": "sce", "models": [{"model": "a", "parameters": {"weight": 0.5}}]},
     "unknown per-model parameter 'weight'"),
    ({"merge_method": "sce", "models": ["a"], "parameters": {"int8_mask": "yes"}}, "parameter 'int8_mask' = 'yes'"),
    ({"merge_method": "ram", "models": ["a"], "parameters": {"epsilon": -1}},
     "parameter 'epsilon' = -1 is out of range"),
    ({"merge_method": "ramplus_tl", "models": ["a"], "parameters": {"epsilon": 0}},
     "parameter 'epsilon' = 0 is out of range: must be > 0"),
    ({"merge_method": "ramplus_tl", "models": ["a"], "parameters": {"r": "x"}}, "parameter 'r' = 'x' is not a number"),
    ({"merge_method": "ramplus_tl", "models": ["a"], "parameters": {"alpha": -0.2}}, "parameter 'alpha' = -0.2"),
    ({"merge_method": "ram", "models": ["a"], "base_model": None}, "needs a base model"),
    ({"merge_method": "ties", "models": ["a"], "parameters": {"rescale": "inverse"}},
     "parameter 'rescale' = 'inverse'"),
    ({"merge_method": "ties", "models": ["a"], "parameters": {"int8_mask": 1}}, "parameter 'int8_mask' = 1"),
])
def test_m2_bad_parameters_are_refused_in_one_line_with_nothing_registered(tmp_path, monkeypatch, capsys, quartet, doc,
                                                                          needle):
    from zoo import Catalog

    monkeypatch.setenv("ZOO_CATALOG", str(tmp_path / "c.db"))

    def ref(r):
        return str(quartet[r]) if isinstance(r, str) else {**r, "model": str(quartet[r["model"]])}

    doc = {"base_model": "base", **doc, "models": [ref(m) for m in doc["models"]]}
    doc["base_model"] = str(quartet[doc["base_model"]]) if doc["base_model"] else None
    if doc["base_model"] is None:
        del doc["base_model"]
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    assert main(["merge", str(cfg), "--out", "bad"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not (tmp_path / "c.db").exists() or Catalog(tmp_path / "c.db").ls() == []


def test_della_refusal_in_the_pure_function():
    from zoo.errors import ZooError

    with pytest.raises(ZooError, match=r"^della: epsilon 0.3 with density 0.2 \(model 2, tensor w\)"):
        apply("della", torch.zeros(4), [torch.ones(4), torch.ones(4)], name="w", density=[0.5, 0.2], epsilon=0.3)


def test_rescale_on_a_tensor_past_one_million_elements():
    """Past 2^20 elements the threshold comes from the sampled selection and the kept L1 norm
    is summed in blocks: TIES and breadcrumbs with `rescale` still match mergekit's kernel.
    (Distinct magnitudes on a zero base: with ties at a threshold mergekit keeps an arbitrary
    one of them, we the first by position.)"""
    g = torch.Generator().manual_seed(5)
    n = 1500 * 1000
    base = torch.zeros(1500, 1000)
    ins = [((torch.randperm(n, generator=g) + 1) / n * 0.01 * torch.sign(torch.randn(n, generator=g))).view(1500, 1000)
           for _ in range(2)]
    for method, params in [("ties", {"density": 0.3}), ("breadcrumbs", {"density": 0.6, "gamma": 0.02})]:
        ours = apply(method, base, ins, rescale=True, **params)
        mk = _mergekit_tensor(method, [base, *ins], 0, {
            "rescale": True, "weight": {1: 1.0, 2: 1.0}, **{k: {1: v, 2: v} for k, v in params.items()}})
        assert float((ours.double() - mk.double()).abs().max()) <= SUM_ULPS * _ulp(mk), method
        plain = apply(method, base, ins, **params)
        assert not torch.equal(ours, plain)  # the rescale did something


@pytest.mark.parametrize("method, params", [
    ("ties", {"density": 0.5}),
    ("breadcrumbs_ties", {"density": 0.6, "gamma": 0.05}),
    ("sce", None),
    ("dare_ties", {"density": 0.5}),
    ("della", {"density": 0.5, "epsilon": 0.1}),
])
def test_sparsifying_methods_run_in_bfloat16_like_mergekit(tmp_path, monkeypatch, quartet_bf16, method, params):
    """`dtype: bfloat16` (mergekit's example configs) runs these methods' math in bfloat16,
    whose magnitude and variance thresholds are selected over bfloat16 values (numpy has no
    bfloat16: this crashed before). Deterministic methods agree with mergekit's bfloat16 merge
    but for threshold-boundary choices (measured: under 1% of elements more than 1 ulp apart);
    the random ones (DARE, DELLA) keep about the expected share of each task vector."""
    model_params = [{"weight": 0.5, **(params or {})}] * 2 if method != "sce" else None
    doc = _doc(method, quartet_bf16, ["a", "b"], "base", {"select_topk": 0.5} if method == "sce" else None,
               model_params)
    doc["dtype"] = "bfloat16"
    ours = _zoo(doc, tmp_path, monkeypatch)
    base = Checkpoint.open(quartet_bf16["base"])
    if method in ("dare_ties", "della"):
        moved = total = 0
        for name in ours.names():
            out = ours.get(name)
            assert out.dtype == torch.bfloat16 and bool(out.isfinite().all())
            if out.dim() == 2:  # (norms are ones in every model: nothing to keep)
                moved += int((out != base.get(name)).sum())
                total += out.numel()
        # kept by at least one of two models, each keeping half: 1 - 0.5**2 (sign election
        # can still zero a kept pair that cancels, rare)
        assert 0.70 < moved / total < 0.78, moved / total
        return
    theirs = _mergekit(doc, tmp_path / "mk")
    off = total = 0
    for name in theirs.names():
        a, b = ours.get(name), theirs.get(name)
        assert a.dtype == torch.bfloat16
        ulps = _bf16_ulps(torch.maximum(a.double().abs(), b.double().abs()))
        off += int(((a.double() - b.double()).abs() > ulps).sum())
        total += a.numel()
    assert off / total < 0.01, (off, total)
