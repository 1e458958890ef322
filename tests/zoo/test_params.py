"""Operator parameters are typed and range-checked before any work: every refused value is
one line naming the operator, the parameter, the value and what is allowed; the ranges are
declared on the params models, so they appear in their JSON schema."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import Field

from zoo.catalog import Catalog
from zoo.errors import ZooError
from zoo.registry import Operator, OperatorParams, all_operators

from tests.helpers.one_line import one_line_error


class _Params(OperatorParams):
    density: float = Field(1.0, gt=0, le=1)
    steps: int = Field(1, ge=1)
    scale: float = 1.0
    lambdas: list[float] = Field(default_factory=list)
    task: str = Field(..., min_length=1)


_OP = Operator("test.params", "1", _Params, lambda call: None)


@pytest.mark.parametrize("given, line", [
    ({"density": 1.5}, "test.params: parameter 'density' = 1.5 is out of range: must be > 0 and <= 1"),
    ({"density": -0.2}, "test.params: parameter 'density' = -0.2 is out of range: must be > 0 and <= 1"),
    ({"density": 0}, "test.params: parameter 'density' = 0 is out of range: must be > 0 and <= 1"),
    ({"density": math.nan}, "test.params: parameter 'density' = nan is not a finite number (must be > 0 and <= 1)"),
    ({"scale": math.inf}, "test.params: parameter 'scale' = inf is not a finite number"),
    ({"scale": True}, "test.params: parameter 'scale' = True is a boolean, not a number"),
    ({"steps": False}, "test.params: parameter 'steps' = False is a boolean, not a number (must be >= 1)"),
    ({"steps": 0}, "test.params: parameter 'steps' = 0 is out of range: must be >= 1"),
    ({"density": "abc"}, "test.params: parameter 'density' = 'abc' is not a number (must be > 0 and <= 1)"),
    ({"lambdas": [0.5, -math.inf]}, "test.params: parameter 'lambdas[1]' = -inf is not a finite number"),
    ({"lambdas": [0.5, True]}, "test.params: parameter 'lambdas' = [0.5, True] is a boolean, not a number"),
    ({"task": ""}, "test.params: parameter 'task' = '' is not allowed"),
])
def test_a_bad_value_is_one_line_naming_parameter_value_and_range(given, line):
    with pytest.raises(ZooError) as e:
        _OP.validate({"task": "digits", **given})
    assert str(e.value).startswith(line) and "\n" not in str(e.value)


def test_a_missing_parameter_is_named():
    with pytest.raises(ZooError, match=r"^test.params: parameter 'task' is required$"):
        _OP.validate({})


def test_numbers_written_as_text_are_numbers_and_bounds_are_inclusive_where_declared():
    # YAML 1.1 (PyYAML, --set, pipeline files) reads 1e-3 as text: still a number
    p = _OP.validate({"task": "t", "density": "1e-1", "steps": "3", "lambdas": ["2.5"]})
    assert (p.density, p.steps, p.lambdas) == (0.1, 3, [2.5])
    assert _OP.validate({"task": "t", "density": 1}).density == 1.0


def _bounds(schema: dict) -> list[tuple[str, float]]:
    return [(k, schema[k]) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in schema]


def _outside(kind: str, bound: float, integer: bool) -> float:
    step = 1 if integer else max(1.0, abs(bound))
    return {"minimum": bound - step, "exclusiveMinimum": bound, "maximum": bound + step,
            "exclusiveMaximum": bound}[kind]


def _baseline(params: type[OperatorParams]) -> dict:
    """A valid params dict: the required fields filled from their schema."""
    schema = params.model_json_schema()
    if schema.get("examples"):  # params whose required fields are structured give an example
        return dict(schema["examples"][0])
    filled = {"string": "digits", "integer": 1, "number": 1.0}
    out = {}
    for name in schema.get("required", []):
        prop = schema["properties"][name]
        if prop.get("type") == "array":
            out[name] = [filled[prop["items"].get("type", "string")]] * max(1, prop.get("minItems", 1))
        else:
            out[name] = filled[prop.get("type", "string")]
    return out


def _top_level_numbers():
    for name, op in sorted(all_operators().items()):
        for field, prop in op.params.model_json_schema()["properties"].items():
            arm = next((a for a in prop.get("anyOf", [prop]) if a.get("type") in ("integer", "number")), None)
            if arm is not None:
                yield pytest.param(op, field, arm, id=f"{name}.{field}")


@pytest.mark.parametrize("op, field, schema", list(_top_level_numbers()))
def test_every_declared_bound_and_every_number_of_every_operator_is_enforced(op, field, schema):
    base = _baseline(op.params)
    op.validate(base)  # the baseline itself is fine
    integer = schema["type"] == "integer"
    for kind, bound in _bounds(schema):
        bad = _outside(kind, bound, integer)
        with pytest.raises(ZooError) as e:
            op.validate({**base, field: bad})
        line = str(e.value)
        assert line.startswith(f"{op.name}: parameter '{field}' = {bad!r} is out of range: must be ") and "\n" not in line
    with pytest.raises(ZooError, match=rf"^{op.name}: parameter '{field}' = True is a boolean, not a number"):
        op.validate({**base, field: True})
    if not integer:
        with pytest.raises(ZooError, match=rf"^{op.name}: parameter '{field}' = nan is not a finite number"):
            op.validate({**base, field: math.nan})


def test_the_ranges_the_issue_names_are_declared_in_the_schemas():
    ops = all_operators()
    ties = ops["merge.ties"].params.model_json_schema()["properties"]
    density = ties["parameters"]["properties"]["density"]["anyOf"][0]
    assert density == {"type": "number", "exclusiveMinimum": 0, "maximum": 1}
    weight = ties["model_parameters"]["items"]["properties"]["weight"]["anyOf"][0]
    assert weight["type"] == "number" and weight["minimum"] < 0 < weight["maximum"] < math.inf
    t = ops["merge.slerp"].params.model_json_schema()["properties"]["parameters"]["properties"]["t"]["anyOf"][0]
    assert (t["minimum"], t["maximum"]) == (0, 1)
    train = ops["train.finetune"].params.model_json_schema()["properties"]
    assert train["lr"]["exclusiveMinimum"] == 0 and train["batch_size"]["minimum"] == 1


# ----- through the command line: one line, non-zero, nothing recorded, nothing written ------
def _visible(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if not p.name.startswith(".")) \
        if store.exists() else []


def _rows(tmp_path: Path) -> list[dict]:
    db = tmp_path / "cli.db"
    return Catalog(db, store=tmp_path / "store").ls() if db.exists() else []


@pytest.mark.parametrize("args, expect", [
    (("train", "nothing-yet", "--task", "digits", "--lr", "nan"), "parameter 'lr' = nan is not a finite number"),
    (("train", "nothing-yet", "--task", "digits", "--lr", "-1"), "parameter 'lr' = -1.0 is out of range: must be > 0"),
    (("train", "nothing-yet", "--task", "digits", "--batch-size", "0"), "parameter 'batch_size' = 0 is out of range"),
    (("new", "gpt2-tiny", "--out", ""), "--out: invalid model name ''"),
    (("new", "gpt2-tiny", "--out", "a@b"), "--out: invalid model name 'a@b'"),
])
def test_cli_refuses_bad_parameters_in_one_line_recording_nothing(run, tmp_path, args, expect):
    before_rows, before_files = _rows(tmp_path), _visible(tmp_path / "store")
    code, out, err = run(*args)
    one_line_error(code, err, expect)
    assert _rows(tmp_path) == before_rows and _visible(tmp_path / "store") == before_files


@pytest.mark.parametrize("weight, expect", [
    (True, "= True is a boolean, not a number"), ("abc", "= 'abc' is not a number"),
    (math.inf, "= inf is not a finite number"),
])
def test_a_pipeline_input_weight_is_a_finite_number(weight, expect):
    from zoo.pipeline.spec import Pipeline

    doc = {"steps": {"m": {"op": "merge.linear", "inputs": [{"ref": "a", "weight": weight}, "b"]}}}
    with pytest.raises(ZooError, match=rf"^step 'm': parameter 'weight' \(of an input\) {expect}"):
        Pipeline.from_dict(doc)
    doc["steps"]["m"]["inputs"][0]["weight"] = "1e-1"  # YAML 1.1 reads 1e-1 as text
    assert Pipeline.from_dict(doc).steps["m"].inputs[0].weight == 0.1
