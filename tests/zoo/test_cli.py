"""The `zoo` command as users run it: outputs, --json schemas, and one-line errors."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest

from zoo.catalog.records import LS_KEYS

from tests.helpers.models import perturbed_copy



def test_add_ls_show_json(run, llama_dir):
    code, out, _ = run("add", str(llama_dir), "--tag", "base")
    assert code == 0 and "added llama-tiny@1" in out
    code, out, _ = run("ls", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 1 and tuple(rows[0]) == LS_KEYS
    assert rows[0]["tags"] == ["base"] and rows[0]["family"] == "llama"
    code, out, _ = run("show", "llama-tiny", "--json")
    info = json.loads(out)
    assert info["ref"] == "llama-tiny@1" and {f["path"] for f in info["files"]} >= {"model.safetensors", "config.json"}
    assert all(len(f["sha256"]) == 64 for f in info["files"])


def test_duplicate_add_says_so(run, llama_dir):
    run("add", str(llama_dir))
    code, out, _ = run("add", str(llama_dir), "--name", "again")
    assert code == 0 and "already catalogued as llama-tiny@1" in out


def test_tensors_diff_tag_metric(run, llama_dir, tmp_path):
    ft = perturbed_copy(llama_dir, tmp_path / "ft", 0.5)
    run("add", str(llama_dir), "--name", "a")
    run("add", str(ft), "--name", "b", "--parent", "a:base")
    code, out, _ = run("tensors", "a", "--json")
    names = {r["name"]: r for r in json.loads(out)}
    assert names["model.norm.weight"]["shape"] == [32]
    code, out, _ = run("diff", "a", "b", "--json")
    diffs = {r["name"]: r for r in json.loads(out)}
    # norm weights are ones, shifted by 0.5: relative change exactly 0.5
    assert diffs["model.norm.weight"]["rel_change"] == pytest.approx(0.5)
    assert run("tag", "b", "x", "y")[0] == 0
    assert run("metric", "b", "acc=0.75", "task=digits")[0] == 0
    row = json.loads(run("show", "b", "--json")[1])
    assert row["tags"] == ["x", "y"] and row["metrics"] == {"acc": 0.75, "task": "digits"}
    assert row["parents"][0]["parent"] == "a@1" and row["parents"][0]["role"] == "base"


def test_lineage_formats(run, llama_dir, tmp_path):
    ft = perturbed_copy(llama_dir, tmp_path / "ft")
    run("add", str(llama_dir), "--name", "a")
    run("add", str(ft), "--name", "b", "--parent", "a:base")
    code, out, _ = run("lineage", "b")
    assert code == 0 and "a@1" in out and "made from" in out
    code, out, _ = run("lineage", "a", "--format", "dot")
    assert out.startswith("digraph") and "->" in out
    png = tmp_path / "l.png"
    code, out, _ = run("lineage", "a", "--format", "png", "-o", str(png))
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_verify_rm_export(run, llama_dir, tmp_path):
    ft = perturbed_copy(llama_dir, tmp_path / "ft")
    run("add", str(llama_dir), "--name", "a")
    run("add", str(ft), "--name", "b", "--parent", "a")
    assert run("verify")[0] == 0
    code, _, err = run("rm", "a")
    assert code != 0 and err.count("\n") == 1 and "--force" in err
    code, out, _ = run("export", "b", str(tmp_path / "exp"))
    assert code == 0 and (tmp_path / "exp" / "model.safetensors").exists()
    (ft / "config.json").write_text("{}")
    code, out, _ = run("verify", "b")
    assert code == 1 and "FAILED" in out
    assert run("rm", "a", "--force")[0] == 0
    assert json.loads(run("ls", "--json")[1])[0]["name"] == "b"


def one_line_error(code: int, err: str, needle: str) -> None:
    assert code != 0, "must exit non-zero"
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert "Traceback" not in err


def test_bad_inputs_give_one_line(run, tmp_path):
    one_line_error(*run("add", str(tmp_path / "missing"))[::2], "no such file or folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(*run("add", str(empty))[::2], "no weights found")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 1 << 20) + b"{}")
    one_line_error(*run("add", str(bad))[::2], "runs past the end")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{[" + b"\0" * 8)
    one_line_error(*run("add", str(garbage))[::2], "corrupt safetensors header")
    one_line_error(*run("show", "ghost")[::2], "no model 'ghost'")
    one_line_error(*run("lineage", "ghost")[::2], "no model 'ghost'")
    one_line_error(*run("add", str(bad), "--parent", "x:y:notanumber")[::2], "not a number")
    assert json.loads(run("ls", "--json")[1]) == []  # nothing half-made


def test_not_a_database_one_line(run, tmp_path):
    bad = tmp_path / "notdb.db"
    bad.write_bytes(b"hello" * 1000)
    one_line_error(*run("--catalog", str(bad), "ls")[::2], "not a catalog database")


def test_end_to_end_subprocess_exit_codes(tmp_path, llama_dir):
    env_cmd = [sys.executable, "-m", "zoo", "--catalog", str(tmp_path / "e.db")]
    ok = subprocess.run([*env_cmd, "add", str(llama_dir)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*env_cmd, "show", "nope"], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: no model 'nope'")
    debug = subprocess.run([*env_cmd, "--debug", "show", "nope"], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    helped = subprocess.run([*env_cmd, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "lineage" in helped.stdout


def test_demo_builds_a_zoo_with_lineage(run):
    code, out, _ = run("demo", "--steps", "4")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(run("ls", "--json", "--tag", "demo")[1])}
    assert set(rows) == {"demo-llama", "demo-llama-email", "demo-llama-asyncio", "demo-llama-ties"}
    merged = json.loads(run("show", "demo-llama-ties", "--json")[1])
    assert [p["parent"] for p in merged["parents"]] == ["demo-llama@1", "demo-llama-email@1", "demo-llama-asyncio@1"]
    info = json.loads(run("show", "demo-llama-email", "--json")[1])
    assert info["parents"][0]["parent"] == "demo-llama@1" and info["run"]["operator"] == "demo.finetune"
    assert "used by" in out


@pytest.mark.parametrize("args, rc", [(["--version"], 0), (["no-such-command"], 2)])
def test_console_script_ends_fast_but_runs_exit_handlers_and_keeps_the_exit_code(args, rc):
    """`zoo` (zoo.cli:run) skips the interpreter's teardown: the exit handlers (temporary
    files) must still run after the command, its output must be complete, its code kept."""
    import subprocess
    import sys

    code = ("import atexit, sys; from zoo.entry import run; "
            "atexit.register(lambda: print('exit handler ran', flush=True)); "
            f"sys.argv = ['zoo', *{args!r}]; run()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == rc, proc.stderr
    assert proc.stdout.endswith("exit handler ran\n")
    if rc == 0:
        assert proc.stdout.startswith("weightzoo ")
    else:
        assert "no such command" in proc.stderr
