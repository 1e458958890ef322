"""Merge settings are typed and range-checked for every value they can take (a scalar, each
item of a gradient, each condition's value, each model's own) before any input is read:
each refusal is one line naming the parameter, where it sits, the value and the range."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from merging.apply import apply
from zoo.catalog import Catalog
from zoo.errors import ZooError
from zoo.registry import get_operator

from tests.helpers.models import perturbed_copy
from tests.helpers.one_line import one_line_error


# ----- the params models: what is refused and what is read -----------------------------------
@pytest.mark.parametrize("op, params, line", [
    ("ties", {"parameters": {"density": 1.5}}, "parameter 'density' = 1.5 is out of range: must be > 0 and <= 1"),
    ("ties", {"parameters": {"density": -0.2}}, "parameter 'density' = -0.2 is out of range: must be > 0 and <= 1"),
    ("ties", {"parameters": {"density": math.nan}}, "parameter 'density' = nan is not a finite number"),
    ("ties", {"parameters": {"lambda": math.inf}}, "parameter 'lambda' = inf is not a finite number"),
    ("slerp", {"parameters": {"t": 7}}, "parameter 't' = 7 is out of range: must be >= 0 and <= 1"),
    ("linear", {"model_parameters": [{"weight": 1.0}, {"weight": 1e300}]},
     "parameter 'weight' (model 2) = 1e+300 is out of range: must be >= -1000000 and <= 1000000"),
    ("linear", {"model_parameters": [{"weight": True}]}, "parameter 'weight' (model 1) = True is a boolean, not a number"),
    ("ties", {"parameters": {"density": "abc"}}, "parameter 'density' = 'abc' is not a number (must be > 0 and <= 1)"),
    ("ties", {"parameters": {"density": [0.2, 0.5, 1.5]}},
     "parameter 'density' (gradient item 3) = 1.5 is out of range"),
    ("ties", {"parameters": {"density": [{"filter": "mlp", "value": 2}, {"value": 0.5}]}},
     "parameter 'density' (condition 1, filter 'mlp') = 2 is out of range"),
    ("ties", {"model_parameters": [{"density": [{"filter": "attn", "value": [0.5, "x"]}]}]},
     "parameter 'density' (model 1, condition 1, filter 'attn', gradient item 2) = 'x' is not a number"),
    ("ties", {"parameters": {"density": [{"filter": 3, "value": 0.5}]}}, "parameter 'density' (condition 1): filter 3 must be text"),
    ("ties", {"parameters": {"density": [{"value": 0.5, "when": "mlp"}]}}, "parameter 'density' (condition 1): {'value': 0.5, 'when': 'mlp'} is not a setting"),
    ("ties", {"parameters": {"normalize": "yes"}}, "parameter 'normalize' = 'yes' is not allowed"),
    ("dare_ties", {"parameters": {"rescale": "l2"}}, "parameter 'rescale' = 'l2' is not allowed"),
    ("breadcrumbs", {"parameters": {"gamma": 1}}, "parameter 'gamma' = 1 is out of range: must be >= 0 and < 1"),
    ("widen", {"parameters": {"score_calibration_value": -1}}, "parameter 'score_calibration_value' = -1 is out"),
    ("ties", {"parameters": {"t": 0.5}}, "unknown parameter 't' (known: density, int8_mask, lambda, normalize, rescale, weight)"),
    ("ties", {"model_parameters": [{"lambda": 1}]}, "unknown per-model parameter 'lambda' (model 1)"),
    ("ties", {"model_parameters": [[0.5]]}, "parameter 'model_parameters[0]' = [0.5] is not allowed"),
    ("ties", {"out_dtype": "fp16"}, "parameter 'out_dtype' = 'fp16' is not allowed"),
    ("lambda_search", {"task": "digits", "lambdas": [0.5, math.inf]}, "parameter 'lambdas[1]' = inf is not a finite"),
])
def test_every_value_a_setting_can_take_is_checked(op, params, line):
    with pytest.raises(ZooError) as e:
        get_operator(f"merge.{op}").validate(params)
    assert str(e.value).startswith(f"merge.{op}: {line}") and "\n" not in str(e.value)


def test_valid_settings_come_back_with_numbers_as_numbers():
    p = get_operator("merge.ties").validate({
        "parameters": {"density": "1e-1", "lambda": 1, "normalize": False,
                       "weight": [{"filter": "mlp", "value": [0, "0.5"]}, {"value": 1}]},
        "model_parameters": [{"weight": 0.5, "density": None}, {}],
    })
    assert p.parameters == {"density": 0.1, "lambda": 1.0, "normalize": False,
                            "weight": [{"filter": "mlp", "value": [0.0, 0.5]}, {"value": 1.0}]}
    assert p.model_parameters == [{"weight": 0.5, "density": None}, {}]
    assert get_operator("merge.ties").validate({"parameters": {"density": 1}}).parameters == {"density": 1.0}
    assert get_operator("merge.slerp").validate({"parameters": {"t": [0, 1]}}).parameters == {"t": [0.0, 1.0]}


def test_the_pure_function_checks_the_same_ranges():
    import torch

    a, b = torch.zeros(4), torch.ones(4)
    with pytest.raises(ZooError, match=r"^ties: parameter 'density' \(model 1\) = 1.5 is out of range"):
        apply("ties", a, [b], density=1.5)
    with pytest.raises(ZooError, match=r"^slerp: parameter 't' = 7 is out of range"):
        apply("slerp", a, [b], t=7)


# ----- through `zoo merge`: one line, non-zero exit, no row, no visible folder -------------
@pytest.fixture
def models(run, tmp_path, llama_dir):
    """base, a, b registered in the CLI's catalog (indexed in place)."""
    for name, src in (("base", llama_dir), ("a", perturbed_copy(llama_dir, tmp_path / "a", 0.01)),
                      ("b", perturbed_copy(llama_dir, tmp_path / "b", 0.02))):
        code, _, err = run("add", str(src), "--name", name)
        assert code == 0, err
    return tmp_path


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "merge.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


TIES = ("merge", "--method", "ties", "--base", "base", "--model", "a", "--model", "b")
LINEAR = ("merge", "--method", "linear", "--model", "a", "--model", "b")
CASES = [
    ((*TIES, "--set", "density=1.5"), "parameter 'density' = 1.5 is out of range: must be > 0 and <= 1"),
    ((*TIES, "--set", "density=-0.2"), "parameter 'density' = -0.2 is out of range"),
    ((*TIES, "--set", "density=.nan"), "parameter 'density' = nan is not a finite number"),
    ((*TIES, "--set", "lambda=.inf"), "parameter 'lambda' = inf is not a finite number"),
    ((*TIES, "--set", "density=abc"), "parameter 'density' = 'abc' is not a number"),
    (("merge", "--method", "slerp", "--base", "base", "--model", "a", "--set", "t=7"),
     "parameter 't' = 7 is out of range: must be >= 0 and <= 1"),
    ((*LINEAR, "-w", "1", "-w", "1e300"), "parameter 'weight' (model 2) = 1e+300 is out of range"),
    ((*LINEAR, "--workers", "0"), "--workers 0 is out of range: must be >= 1"),
    ((*LINEAR, "--workers", "-2"), "--workers -2 is out of range: must be >= 1"),
    ((*LINEAR, "--out", ""), "--out: invalid model name ''"),
    ("yaml", """\
        merge_method: linear
        models:
          - model: a
            parameters: {weight: true}
          - model: b
     """, "parameter 'weight' (model 1) = True is a boolean, not a number"),
    ("yaml", """\
        merge_method: linear
        models:
          a: {weight: 0.5}
          b: {weight: 0.5}
     """, "models must be a list of entries (- model: REF, with optional parameters:), not a mapping"),
    ("yaml", """\
        merge_method: ties
        base_model: base
        models: [a, b]
        parameters:
          density: [{filter: mlp, value: 0.5}, {value: [0.3, 2]}]
     """, "parameter 'density' (condition 2, gradient item 2) = 2 is out of range"),
    ("yaml", """\
        merge_method: ties
        base_model: base
        models:
          - model: a
            parameters: [0.5]
        """, "models[0].parameters must be a mapping of parameter names to values"),
    ("yaml", """\
        merge_method: ties
        base_model: base
        models: [a, b]
        name: ""
        """, "name must be non-empty text"),
]


@pytest.mark.parametrize("args, expect", [c if c[0] != "yaml" else (("yaml", c[1]), c[2]) for c in CASES])
def test_zoo_merge_refuses_bad_parameters_in_one_line_recording_nothing(run, models, args, expect):
    if args[0] == "yaml":
        args = ("merge", _yaml(models, args[1]))
    catalog = Catalog(models / "cli.db", store=models / "store")
    before = catalog.ls()
    store = models / "store"
    files = sorted(store.rglob("*")) if store.exists() else []
    code, out, err = run(*args)
    one_line_error(code, err, expect)
    assert catalog.ls() == before
    assert (sorted(store.rglob("*")) if store.exists() else []) == files
