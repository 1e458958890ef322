"""mergekit's `modules:` key: a single-module architecture's `default` module, with
mergekit's parameter precedence (source > slice > module > document)."""
from __future__ import annotations

import pytest
import yaml

from tests.merging.test_slices_multidoc import assert_same, four, run_mergekit, run_zoo  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow  # runs mergekit's own code beside ours


@pytest.mark.parametrize("case", ["models_fall_through", "slices"])
def test_a_modules_document_equals_mergekit(tmp_path, four, catalog, case):
    base, a, b = four["base"], four["a"], four["b"]
    if case == "models_fall_through":
        # the module's density applies to mlp tensors only; elsewhere it falls through to the
        # document's (0.8), and the module's weight overrides the document's
        doc = {"merge_method": "ties", "base_model": base, "dtype": "float32",
               "parameters": {"density": 0.8, "weight": 0.2},
               "modules": {"default": {
                   "models": [{"model": a}, {"model": b, "parameters": {"weight": 0.7}}],
                   "parameters": {"density": [{"filter": "mlp", "value": 0.3}], "weight": 0.5}}}}
    else:
        doc = {"merge_method": "linear", "dtype": "float32", "parameters": {"weight": 0.1},
               "modules": {"default": {
                   "slices": [{"sources": [{"model": a, "layer_range": [0, 3]}, {"model": b, "layer_range": [1, 4]}]},
                              {"sources": [{"model": a, "layer_range": [3, 4], "parameters": {"weight": 2.0}},
                                           {"model": b, "layer_range": [3, 4]}]}],
                   "parameters": {"weight": 1.0}}}}
    ours = catalog.open(run_zoo(catalog, doc, tmp_path).entry)
    theirs = run_mergekit(doc, tmp_path / "mk")
    assert_same(ours, theirs, exact=False)
    if case == "models_fall_through":  # the two densities did take effect: the same merge without them differs
        plain = dict(doc, modules={"default": {"models": doc["modules"]["default"]["models"]}})
        other = catalog.open(run_zoo(catalog, plain, tmp_path, out="plain").entry)
        for name in ("model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight"):
            assert not (other.get(name) == ours.get(name)).all(), name


@pytest.mark.parametrize("modules,needle", [
    ({"vision_tower": {"models": [{"model": "A"}]}}, "unknown module 'vision_tower'"),
    ({"default": {"models": [{"model": "A"}], "slices": []}}, "either models: or slices:"),
    ({"default": {"models": [{"model": "A"}], "extra": 1}}, "unknown key(s) extra"),
    ([], "modules must map a module name"),
])
def test_module_mistakes_are_one_line_and_register_nothing(tmp_path, four, run, modules, needle):
    for module in (modules.values() if isinstance(modules, dict) else ()):
        for m in module.get("models") or ():
            m["model"] = four["a"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"merge_method": "linear", "modules": modules}))
    code, _, err = run("merge", str(path))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert run("ls", "--json")[1].strip() in ("[]", "")
