"""Operator contracts, enforced by the runner before any work: every registered operator is
fed too few and too many inputs of each role it declares (and a role it does not take),
and an out-of-range value for each bound its params model declares in its JSON schema.
Also the compatibility contracts: the inputs of a merge share tensor names and shapes,
and an expansion changes the shape."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zoo.catalog import Parent
from zoo.errors import ZooError
from zoo.registry import Operator, all_operators

OPERATORS = all_operators()
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


# ----- inputs: too few, too many, a role not taken ---------------------------------------------
def count_cases(op: Operator) -> list[tuple[dict[str, int], str, int]]:
    """(role -> count given, the role that breaks the contract, its count) for each way to
    break `op`'s declared inputs; every other role gets its least."""
    least = {s.role: s.least for s in op.inputs}
    cases = [({**least, "stranger": 1}, "stranger", 1)]
    for s in op.inputs:
        if s.least > 0:
            cases.append(({**least, s.role: s.least - 1}, s.role, s.least - 1))
        if s.most is not None:
            cases.append(({**least, s.role: s.most + 1}, s.role, s.most + 1))
    return cases


CONTRACT_CASES = [pytest.param(name, counts, role, n, id=f"{name}-{role}-{n}")
                  for name, op in sorted(OPERATORS.items()) if op.inputs is not None
                  for counts, role, n in count_cases(op)]


def test_every_operator_declares_its_inputs():
    assert [name for name, op in sorted(OPERATORS.items()) if op.inputs is None] == []
    assert len(CONTRACT_CASES) >= 2 * len(OPERATORS)


@pytest.fixture
def entry(catalog, tmp_path):
    from zoo import save_tensors

    save_tensors(tmp_path / "m", {"w": torch.ones(2, 3)})
    return catalog.add(tmp_path / "m", "m").entry


def _visible(catalog) -> list[Path]:
    if not catalog.store.exists():
        return []
    return [p for p in catalog.store.rglob("*") if not any(x.startswith(".") for x in p.relative_to(catalog.store).parts)]


@pytest.mark.parametrize("name, counts, role, n", CONTRACT_CASES)
def test_the_runner_refuses_inputs_that_break_the_contract_before_any_work(catalog, entry, monkeypatch, name, counts,
                                                                            role, n):
    import zoo.runner as runner

    monkeypatch.setattr(runner, "_resolve_inputs", lambda *a: pytest.fail("inputs resolved before the check"))
    monkeypatch.setattr(Operator, "validate", lambda *a: pytest.fail("params validated before the check"))
    parents = [Parent(entry.id, r) for r, k in counts.items() for _ in range(k)]
    with pytest.raises(ZooError) as e:
        runner.run_operator(catalog, name, parents, {})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{name} takes ") and f"role {role!r}, got {n}" in msg, msg
    assert catalog.count() == 1 and catalog.runs() == [] and _visible(catalog) == []


# ----- params: a value past each declared bound ------------------------------------------------
def _bounds(schema: dict, defs: dict, path: tuple) -> list[tuple[tuple, str, float, str]]:
    """(path to the value, bound, its value, integer|number) for every bound in a JSON schema."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    found = []
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        found += _bounds(branch, defs, path)
    kind = schema.get("type")
    if kind in ("integer", "number"):
        found += [(path, b, schema[b], kind) for b in BOUNDS if b in schema]
    if kind == "object" or "properties" in schema:
        for key, sub in (schema.get("properties") or {}).items():
            found += _bounds(sub, defs, path + (key,))
    if isinstance(schema.get("items"), dict):
        found += _bounds(schema["items"], defs, path + (0,))
    return found


def outside(bound: str, limit: float, kind: str) -> float:
    """A value just past `limit` on the wrong side of `bound`."""
    step = 1 if kind == "integer" else 0.5
    if bound.startswith("exclusive"):
        return limit
    return limit - step if bound == "minimum" else limit + step


def _nest(path: tuple, value):
    for key in reversed(path):
        value = [value] if key == 0 else {key: value}
    return value


def param_cases() -> list:
    cases, seen = [], set()
    for name, op in sorted(OPERATORS.items()):
        schema = op.params.model_json_schema()
        for path, bound, limit, kind in _bounds(schema, schema.get("$defs", {}), ()):
            if (name, path, bound) in seen or not path:
                continue
            seen.add((name, path, bound))
            keys = [k for k in path if k != 0]  # merges: parameters.NAME[.value], model_parameters[0].NAME
            leaf = keys[1] if keys[0] in ("parameters", "model_parameters") and len(keys) > 1 else keys[0]
            cases.append(pytest.param(name, path, leaf, outside(bound, limit, kind), bound, limit,
                                      id=f"{name}-{'.'.join(map(str, path))}-{bound}"))
    return cases


PARAM_CASES = param_cases()


def test_params_models_declare_ranges():
    """Ranges come from the params models: some must be there for the test below to mean anything."""
    assert len(PARAM_CASES) >= 20


@pytest.mark.parametrize("name, path, leaf, value, bound, limit", PARAM_CASES)
def test_a_value_past_a_declared_bound_is_one_line_naming_the_parameter(name, path, leaf, value, bound, limit):
    with pytest.raises(ZooError) as e:
        OPERATORS[name].validate(_nest(path, value))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{name}:") and leaf in msg, msg


@pytest.mark.parametrize("name, path, leaf, value, bound, limit", PARAM_CASES[:1] + [
    c for c in PARAM_CASES if c.values[0] in ("merge.ties", "stitch.snnet")])
def test_the_runner_refuses_bad_params_before_any_work(catalog, entry, monkeypatch, name, path, leaf, value, bound,
                                                       limit):
    import zoo.runner as runner

    monkeypatch.setattr(runner, "_resolve_inputs", lambda *a: pytest.fail("inputs resolved before the params check"))
    op = OPERATORS[name]
    parents = [Parent(entry.id, s.role) for s in op.inputs for _ in range(s.least)]
    with pytest.raises(ZooError, match=leaf):
        runner.run_operator(catalog, name, parents, _nest(path, value))
    assert catalog.count() == 1 and catalog.runs() == [] and _visible(catalog) == []


# ----- compatibility: a merge's inputs share tensor names and shapes --------------------------
@pytest.fixture
def models(tmp_path, capsys):
    from tests.helpers.models import expandable_model, tiny_llama
    from zoo import save_tensors

    tiny_llama().save_pretrained(tmp_path / "llama")
    expandable_model("gpt2")[0].save_pretrained(tmp_path / "gpt2")
    save_tensors(tmp_path / "ab", {"a": torch.zeros(3), "b": torch.zeros(3)})
    save_tensors(tmp_path / "cd", {"c": torch.ones(3), "d": torch.ones(3)})
    save_tensors(tmp_path / "abx", {"a": torch.ones(3), "b": torch.ones(3), "x": torch.ones(2)})
    save_tensors(tmp_path / "ab-wide", {"a": torch.ones(4), "b": torch.ones(3)})
    capsys.readouterr()  # the progress bars of save_pretrained are not the commands' output
    return tmp_path


def _refs(run) -> list[str]:
    return sorted(r["ref"] for r in json.loads(run("ls", "--json")[1]))


@pytest.mark.parametrize("args", [
    ["--method", "ties", "--base", "llama", "--model", "gpt2", "--set", "density=0.5"],
    ["--method", "ties", "--base", "llama", "--model", "gpt2", "--set", "density=0.5", "--set", "copy_unmatched=true",
     "--set", "mismatched_shapes=base"],  # no option makes a copy of the base a merge
    ["--method", "linear", "--model", "ab", "--model", "cd"],
    ["--method", "linear", "--model", "ab", "--model", "cd", "--set", "copy_unmatched=true"],
])
def test_a_merge_of_models_sharing_no_tensors_is_refused(run, models, monkeypatch, args):
    monkeypatch.chdir(models)
    assert run("add", "llama", "--name", "llama")[0] == 0
    code, out, err = run("merge", *args, "--out", "m")
    assert code != 0 and err.count("\n") == 1 and "shares no tensor names with" in err, err
    assert _refs(run) == ["llama@1"] and not (models / "store" / "m").exists()


def test_tensors_not_in_every_input_need_copy_unmatched(run, models, monkeypatch, catalog):
    monkeypatch.chdir(models)
    code, _, err = run("merge", "--method", "task_arithmetic", "--base", "ab", "--model", "abx", "--out", "m")
    assert code != 0 and err.count("\n") == 1 and "tensor x is in model 1 but not in the base" in err
    assert "copy_unmatched: true" in err and _refs(run) == []
    code, out, err = run("merge", "--method", "task_arithmetic", "--base", "abx", "--model", "ab", "--out", "m")
    assert code != 0 and "tensor x is in the base but not in model 1" in err and _refs(run) == []
    code, out, err = run("merge", "--method", "task_arithmetic", "--base", "abx", "--model", "ab", "--out", "m",
                         "--set", "copy_unmatched=true")
    assert code == 0, err
    shown = json.loads(run("show", "m", "--json")[1])
    assert shown["run"]["params"]["copy_unmatched"] is True
    assert "x" in shown["run"]["notes"]["copied_from_reference"]


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(run, models, monkeypatch):
    monkeypatch.chdir(models)
    code, _, err = run("merge", "--method", "linear", "--model", "ab", "--model", "ab-wide", "--out", "m")
    assert code != 0 and err.count("\n") == 1 and "tensor a has shape [4] in model 2 (ab-wide) but [3]" in err
    assert _refs(run) == []


# ----- expansions change the shape -------------------------------------------------------------
@pytest.mark.parametrize("targets", [[], ["--hidden-size", "32", "--num-layers", "2"]])
def test_an_expansion_to_the_same_shape_is_refused(run, models, monkeypatch, targets):
    monkeypatch.chdir(models)
    assert run("add", "llama", "--name", "src")[0] == 0
    code, out, err = run("expand", "src", *targets, "--out", "x")
    assert code != 0 and err.count("\n") == 1 and "the target shape equals the source's" in err, err
    assert _refs(run) == ["src@1"] and not (models / "store" / "x").exists()
    assert run("expand", "src", "--num-layers", "3", "--out", "x")[0] == 0  # a real change still works
