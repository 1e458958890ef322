"""What the CLI prints, as people read it: tables piped (TSV, whole values) and in an 80-column
terminal (cut cells end with "…", ids and sizes never cut), `zoo ls --columns`, help texts
that show defaults and end with an example, and `zoo build --dry-run` saying why each run
would be reused or run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers.safetensors_files import entry, write

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LONG = "a-model-whose-name-is-far-too-long-for-an-eighty-column-terminal"
HEADER = ["ref", "id", "family", "params", "dtype", "size", "tags", "metrics", "location"]


def _one_tensor_file(path: Path, n: int) -> Path:
    """A valid safetensors file holding one F32 tensor of n zeros (n parameters)."""
    return write(path, {"w": entry("F32", [n], [0, 4 * n])}, bytes(4 * n))


def fourteen(run, tmp_path: Path) -> Path:
    """The `run` fixture's catalog with 14 entries (ids 1..14); `m09` holds 572,800 parameters
    (572.8K), `LONG` a long name, a long tag and metrics, one of them text with a tab and a
    newline."""
    from zoo import Catalog

    cat = Catalog(tmp_path / "cli.db", store=tmp_path / "store")
    for i in range(1, 15):
        n = 572_800 if i == 9 else 100 + i
        cat.add(_one_tensor_file(tmp_path / f"f{i}.safetensors", n), LONG if i == 12 else f"m{i:02d}")
    cat.tag(LONG, add=["a-tag-that-is-long-enough-to-be-cut"])
    assert run("metric", LONG, "acc=0.912345678", 'note="x\\ty\\nz"')[0] == 0  # YAML escapes: a tab, a newline
    return tmp_path / "cli.db"


def _zoo(db: Path, *args: str, **env: str) -> str:
    """`python -m zoo --catalog DB ARGS | cat` in a clean environment plus `env`: stdout."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TTY_COMPATIBLE", "FORCE_COLOR")}
    cmd = f"{sys.executable} -m zoo --catalog {db} {' '.join(args)} | cat"
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, env={**base, **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _rows(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


# ----- tables ---------------------------------------------------------------------------------
def test_piped_ls_is_tab_separated_with_every_value_whole(run, tmp_path):
    fourteen(run, tmp_path)
    code, out, _ = run("ls")  # captured: not a terminal
    header, *rows = _rows(out)
    assert code == 0 and header == HEADER and len(rows) == 14
    assert all(len(r) == len(HEADER) for r in rows), "a tab or newline inside a value must be escaped"
    by_id = {r[1]: dict(zip(HEADER, r)) for r in rows}
    assert sorted(by_id, key=int) == [str(i) for i in range(1, 15)]  # ids 10-14 whole, not "1"
    big = by_id["9"]
    assert (big["ref"], big["params"], big["size"], big["family"]) == ("m09@1", "572.8K", "2.3 MB", "-")
    assert big["location"] == str(tmp_path / "f9.safetensors")
    long = by_id["12"]
    assert long["ref"] == f"{LONG}@1" and long["tags"] == "a-tag-that-is-long-enough-to-be-cut"
    assert long["metrics"] == "acc=0.912345678, note=x\\ty\\nz"  # every metric, full precision, escaped


def test_ls_through_a_real_pipe_and_in_an_80_column_terminal(run, tmp_path):
    db = fourteen(run, tmp_path)
    piped = _rows(_zoo(db, "ls"))
    assert piped[0] == HEADER and {r[1] for r in piped[1:]} >= {"10", "11", "12", "13", "14"}
    assert ["m09@1", "9", "-", "572.8K"] in [r[:4] for r in piped]

    shown = ANSI.sub("", _zoo(db, "ls", COLUMNS="80", TTY_COMPATIBLE="1")).splitlines()
    assert "\t" not in "".join(shown) and all(len(line.rstrip()) <= 80 for line in shown)
    assert shown[0].split()[:6] == ["ref", "id", "family", "params", "dtype", "size"]
    cells = {line.split()[1]: line for line in shown[1:]}  # rows by id: ids are never cut
    assert sorted(cells, key=int) == [str(i) for i in range(1, 15)]
    assert "572.8K" in cells["9"].split() and "2.3 MB" in cells["9"]
    cut = cells["12"].split()[0]
    assert cut.endswith("…") and LONG.startswith(cut[:-1]) and LONG not in cells["12"]  # cut, and says so
    assert "a-tag-that-is-long-enough-to-be-cut" not in cells["12"] and "a-tag" in cells["12"]


def test_ls_columns_chooses_and_refuses_in_one_line(run, tmp_path):
    fourteen(run, tmp_path)
    code, out, _ = run("ls", "--columns", "id, name,size")
    rows = _rows(out)
    assert code == 0 and rows[0] == ["id", "name", "size"] and ["9", "m09", "2.3 MB"] in rows
    code, out, err = run("ls", "--columns", "id,nme")
    assert code != 0 and out == "" and err.count("\n") == 1
    assert err.startswith("error: --columns: unknown column 'nme' (did you mean name?); valid: ref, id, name")
    code, out, err = run("ls", "--columns", "id", "--json")
    assert code != 0 and out == "" and "--json always prints every field" in err


def test_other_tables_pipe_as_tsv(run, tmp_path):
    fourteen(run, tmp_path)
    code, out, _ = run("tensors", "m09")
    assert code == 0 and _rows(out) == [["name", "shape", "dtype", "params"], ["w", "572800", "float32", "572,800"]]
    code, out, _ = run("show", "m09")
    fields = dict(r for r in _rows(out) if len(r) == 2)
    assert fields["ref"] == "m09@1" and len(fields["digest"]) == 64
    files = out.split("file\tsize\tsha256\n")[1]
    assert _rows(files) == [["f9.safetensors", "2.3 MB", json.loads(run("show", "m09", "--json")[1])["files"][0]["sha256"]]]


# ----- help -----------------------------------------------------------------------------------
def _help(run, monkeypatch, *words: str) -> str:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(*words, "--help")
    assert code == 0, err
    return " ".join(out.replace("│", " ").split())


def test_help_shows_defaults_and_no_type_noise(run, monkeypatch):
    merge = _help(run, monkeypatch, "merge")
    assert "[default: merge-METHOD-HASH; HASH: the first 8 hex digits of the run's cache key" in merge
    assert "[default: cpu]" in merge and "[default: 2]" in merge and "[default: 5GB]" in merge
    assert "--weight -w <float>" in merge and "--workers <int>" in merge
    add = _help(run, monkeypatch, "add")
    assert "[default: folder or file name]" in add and "[default: none]" in add
    for text in (merge, add, _help(run, monkeypatch), _help(run, monkeypatch, "ls")):
        assert "<bool>" not in text and "<str>" not in text
        assert not re.search(r"\w \.(\s|$)", text), "a swallowed [default: ...] leaves 'name .'"
    assert "[default: ./catalog.db]" in _help(run, monkeypatch)


def test_every_command_help_shows_defaults_and_ends_with_an_example(run, monkeypatch):
    from zoo.cli import command
    from zoo.cli.help import commands

    import typer

    for path, cmd in commands(command()):
        ctx = typer.Context(cmd, info_name=path)
        for param in cmd.params:
            if param.param_type_name != "option" or getattr(param, "is_flag", False) or param.required:
                continue
            record = param.get_help_record(ctx)
            assert record and "[default: " in record[1], f"{path} {param.opts[0]}: no default shown"
        words = path.split()[1:]
        monkeypatch.setenv("COLUMNS", "200")
        code, out, err = run(*words, "--help")
        assert code == 0, f"{path}: {err}"
        closing = out.rsplit("╰", 1)[-1].split("\n", 1)[-1].strip()  # what follows the last panel
        assert closing.startswith("Example"), f"{path}: help does not end with an example:\n{out}"
        assert "<bool>" not in out and "<str>" not in out, path


# ----- zoo build --dry-run --------------------------------------------------------------------
VIT = {"family": "vit", "config": {"hidden_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 24, "image_size": 8, "patch_size": 4, "num_channels": 1,
                                   "num_labels": 10}}


def pipeline_doc(mix: dict | None = None, base_seed: int = 0) -> dict:
    """Two random ViTs and their linear merge, which also reads the catalog model `ext`."""
    return {"name": "p", "steps": {
        "base": {"op": "init.random", "params": {**VIT, "seed": base_seed}},
        "other": {"op": "init.random", "params": {**VIT, "seed": 1}},
        "mix": {"op": "merge.linear", "inputs": ["base", "other", "ext"],
                "params": mix or {"parameters": {"normalize": True}}},
    }}


def _ext(catalog, seed: int) -> str:
    """The catalog model `ext` (a new version each time): a random ViT the merge can read."""
    from zoo.training import new_model

    return new_model(catalog, "vit", "ext", seed, **VIT["config"]).entry.ref


def _decisions(steps: list[dict]) -> dict[str, tuple[str, str]]:
    """step -> (action, reuse refs or reason) of its one run."""
    return {s["step"]: (s["plan"][0]["action"], ", ".join(s["plan"][0]["reuse"]) or s["plan"][0]["reason"])
            for s in steps}


def _statuses(results) -> dict[str, str]:
    return {n: {"reused": "reuse", "ran": "run"}[r.status] for n, r in results.items()}


def test_dry_run_says_which_runs_are_reused_and_why_the_others_run(catalog, tmp_path):
    from zoo.pipeline import Pipeline, plan, run_pipeline

    def planned(doc: dict, **kw) -> dict[str, tuple[str, str]]:
        steps = plan(catalog, Pipeline.from_dict(doc), **kw)
        return _decisions(steps)

    assert _ext(catalog, 5) == "ext@1"
    models, runs = len(catalog.ls()), len(catalog.runs(50))
    first = planned(pipeline_doc())
    assert first == {"base": ("run", "new step"), "other": ("run", "new step"),
                     "mix": ("run", "input from step 'base', which will run")}
    assert (len(catalog.ls()), len(catalog.runs(50))) == (models, runs)  # a dry run runs nothing
    ran = run_pipeline(catalog, Pipeline.from_dict(pipeline_doc()))
    assert _statuses(ran) == {k: v[0] for k, v in first.items()}

    again = planned(pipeline_doc())  # the runner's own result says what is reused: its outputs
    assert again == {n: ("reuse", ", ".join(r.outputs)) for n, r in ran.items()}
    assert again["mix"] == ("reuse", "p-mix@1")

    changed = planned(pipeline_doc(mix={"parameters": {"normalize": False}}))
    assert changed["base"][0] == changed["other"][0] == "reuse"
    assert changed["mix"] == ("run", "new params: parameters.normalize true -> false")

    reseeded = planned(pipeline_doc(base_seed=2))
    assert reseeded["base"] == ("run", "new params: seed 0 -> 2") and reseeded["other"][0] == "reuse"
    assert reseeded["mix"] == ("run", "input from step 'base', which will run")

    forced = planned(pipeline_doc(), force={"other"})
    assert forced["other"] == ("run", "no cache: --force other") and forced["base"][0] == "reuse"
    assert forced["mix"] == ("run", "input from step 'other', which will run")
    assert set(planned(pipeline_doc(), no_cache=True).values()) == {("run", "no cache: --no-cache")}

    assert _ext(catalog, 6) == "ext@2"  # the name now stands for other bytes
    moved = planned(pipeline_doc())
    assert moved["mix"] == ("run", "changed input: ext@2 (the recorded run read ext@1)")
    assert _statuses(run_pipeline(catalog, Pipeline.from_dict(pipeline_doc()))) == {k: v[0] for k, v in moved.items()}


def test_build_dry_run_prints_the_decisions(run, tmp_path):
    from zoo import Catalog

    _ext(Catalog(tmp_path / "cli.db", store=tmp_path / "store"), 5)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline_doc()))
    code, out, err = run("build", str(path), "--dry-run")
    assert code == 0 and out.splitlines() == [
        "base: init.random <- -  1 run(s) -> p-base", "  run (new step)",
        "other: init.random <- -  1 run(s) -> p-other", "  run (new step)",
        "mix: merge.linear <- base, other, ext  1 run(s) -> p-mix", "  run (input from step 'base', which will run)"]
    assert run("build", str(path))[0] == 0
    code, out, _ = run("build", str(path), "--dry-run")
    assert [line for line in out.splitlines() if line.startswith("  ")] == \
        ["  reuse p-base@1", "  reuse p-other@1", "  reuse p-mix@1"]
    code, out, _ = run("build", str(path), "--dry-run", "--no-cache", "--json")
    assert code == 0 and {p["reason"] for s in json.loads(out) for p in s["plan"]} == {"no cache: --no-cache"}
    code, out, err = run("build", str(path), "--dry-run", "--force", "mixx")
    assert code != 0 and out == "" and err.strip() == (
        "error: --force 'mixx': no such step (did you mean mix?); the steps are base, mix, other")
