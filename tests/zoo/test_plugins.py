"""Plugins: a package outside this repository adds an operator and a `zoo` command group
through the `weightzoo.plugins` entry point, and every front end sees them: `zoo --help`,
`zoo build` (checks, dry run, run, cache) and the TUI's run view. The example plugin's
source is tests/data/example_plugin; each test installs it into a temporary site folder
(a package plus its .dist-info), as pip would."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN_SRC = Path(__file__).parents[1] / "data" / "example_plugin" / "zoo_example_plugin"


def _site(tmp_path: Path, entry: str = "zoo_example_plugin.plugin:PLUGIN") -> Path:
    site = tmp_path / "site"
    shutil.copytree(PLUGIN_SRC, site / "zoo_example_plugin")
    dist = site / "zoo_example_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-example-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[weightzoo.plugins]\nexample = {entry}\n")
    return site


@pytest.fixture
def zoo_with_plugin(tmp_path, llama_dir):
    """run(*args) -> CompletedProcess: the `zoo` command in a process that has the plugin."""
    site = _site(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "ZOO_CATALOG": str(tmp_path / "catalog.db"), "ZOO_STORE": str(tmp_path / "store"),
           "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "zoo", *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)

    assert run("add", str(llama_dir), "--name", "llama").returncode == 0
    return run


def _tensors(catalog_path: Path, store: Path, ref: str) -> dict:
    from zoo import Catalog

    ckpt = Catalog(catalog_path, store=store).open(ref)
    return {n: ckpt.get(n).clone() for n in ckpt.names()}


@pytest.mark.slow
def test_plugin_command_and_operator_appear_in_the_cli(zoo_with_plugin, tmp_path):
    helped = zoo_with_plugin("--help")
    assert helped.returncode == 0 and "example" in helped.stdout and "warning" not in helped.stderr
    sub = zoo_with_plugin("example", "scale", "--help")
    assert sub.returncode == 0 and "--factor" in sub.stdout

    made = zoo_with_plugin("example", "scale", "llama", "--factor", "3", "--out", "tripled")
    assert made.returncode == 0, made.stderr
    src = _tensors(tmp_path / "catalog.db", tmp_path / "store", "llama")
    out = _tensors(tmp_path / "catalog.db", tmp_path / "store", "tripled")
    assert out.keys() == src.keys()
    assert all(__import__("torch").equal(out[n], src[n] * 3) for n in src)
    shown = json.loads(zoo_with_plugin("show", "tripled", "--json").stdout)
    assert shown["run"]["operator"] == "example.scale" and shown["run"]["params"] == {"factor": 3.0}
    assert [(p["parent"], p["role"]) for p in shown["parents"]] == [("llama@1", "source")]


@pytest.mark.slow
def test_pipelines_check_run_and_cache_plugin_operators(zoo_with_plugin, tmp_path):
    pipe = tmp_path / "pipe.yaml"
    pipe.write_text("name: plug\nsteps:\n  half: {op: example.scale, inputs: [llama], params: {factor: 0.5}}\n")
    planned = zoo_with_plugin("build", str(pipe), "--dry-run")
    assert planned.returncode == 0 and "half: example.scale" in planned.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  half: {op: example.scale, inputs: [llama], params: {factr: 0.5}}\n")
    refused = zoo_with_plugin("build", str(bad), "--dry-run")
    assert refused.returncode != 0 and "unknown parameter 'factr'" in refused.stderr

    first = zoo_with_plugin("build", str(pipe))
    assert first.returncode == 0, first.stderr
    assert "half" in first.stdout and "ran" in first.stdout
    again = zoo_with_plugin("build", str(pipe))
    assert again.returncode == 0 and "reused" in again.stdout


@pytest.mark.slow
def test_the_tui_run_view_shows_plugin_runs(zoo_with_plugin, tmp_path):
    assert zoo_with_plugin("example", "scale", "llama", "--out", "doubled").returncode == 0
    from tui.app import ZooApp
    from tui.screens.runs import RunsScreen
    from zoo import Catalog

    app = ZooApp(Catalog(tmp_path / "catalog.db", store=tmp_path / "store"))

    async def look() -> list[str]:
        async with app.run_test(size=(160, 44)) as pilot:
            await pilot.pause()
            await pilot.press("r")
            assert isinstance(app.screen, RunsScreen)
            return [r["operator"] for r in app.screen.runs]

    assert asyncio.run(look()) == ["example.scale"]


def test_a_broken_plugin_is_named_and_the_rest_still_works(tmp_path):
    site = _site(tmp_path, entry="zoo_example_plugin.missing:PLUGIN")
    env = {**os.environ, "PYTHONPATH": str(site), "ZOO_CATALOG": str(tmp_path / "c.db")}
    r = subprocess.run([sys.executable, "-m", "zoo", "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "merge" in r.stdout
    assert "warning: plugin 'example'" in r.stderr and "zoo_example_plugin.missing" in r.stderr
