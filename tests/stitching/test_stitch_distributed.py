"""Stitched training under accelerate in two CPU processes (torchrun): both processes take
the same sampled configuration each step, gradients are averaged, weights stay identical."""
from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys
from pathlib import Path

pytestmark = pytest.mark.slow  # every test here starts several processes

SCRIPT = Path(__file__).parents[1] / "scripts" / "stitch_train_ddp.py"


def test_training_runs_in_two_cpu_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in records] == [2, 2]
    assert "MULTI_CPU" in records[0]["type"]
    assert records[0]["digest"] == records[1]["digest"]  # all-reduced gradients: identical replicas
    assert records[0]["before"] == records[1]["before"] != records[0]["digest"]  # same start, and it trained


def test_training_operators_run_in_two_cpu_processes(tmp_path):
    """`zoo train`, Learngene Pool distillation and weight-generator training share the loop."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    script = Path(__file__).parents[1] / "scripts" / "train_ddp.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for name in ("train", "pool", "generator"):
        assert r0["before"][name] == r1["before"][name] != r0["after"][name], name  # same start, trained
        assert r0["after"][name] == r1["after"][name], name  # gradients averaged: replicas stay identical


def test_zoo_commands_launched_as_two_processes_record_one_result(tmp_path):
    """`torchrun -m zoo train|stitch build` (what `accelerate launch` does): both ranks train
    together, the main process registers, the other reads that entry; one row each."""
    from zoo import Catalog
    from zoo.training import new_model

    cat = Catalog(tmp_path / "c.db", store=tmp_path / "store")
    new_model(cat, "vit-ti", "small", seed=0)
    new_model(cat, "vit-s", "large", seed=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ZOO_CATALOG": str(tmp_path / "c.db"),
           "ZOO_STORE": str(tmp_path / "store")}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "zoo"]
    for args, name in ((["train", "small", "--task", "digits", "--steps", "4", "--out", "trained"], "trained"),
                       (["stitch", "build", "-a", "small", "-a", "large", "--task", "digits", "--steps", "4",
                         "--out", "net"], "net")):
        proc = subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count(f"{name}@1") == 2 and f"{name}@2" not in proc.stdout  # both ranks name the one entry
        assert [r["version"] for r in cat.ls(name=name)] == [1]
        assert not list((tmp_path / "store").glob(".incoming-*"))  # the other rank's copy is gone
    run = cat.producing_run("net")
    assert run.operator == "stitch.snnet" and cat.get("net").metrics["stitch/configs"] > 2


def test_a_pipeline_launched_as_two_processes_trains_registers_and_pushes_once(hub, tmp_path):
    """`torchrun -m zoo build`: each operator is recorded once and the push step makes one commit."""
    import yaml

    from zoo import Catalog

    vit = {"hidden_size": 12, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 24,
           "image_size": 8, "patch_size": 4, "num_channels": 1, "num_labels": 10}
    pipe = {"name": "dist", "steps": {
        "base": {"op": "init.random", "params": {"family": "vit", "config": vit}},
        "tuned": {"op": "train.finetune", "inputs": ["base"], "params": {"task": "digits", "steps": 3}},
        "ship": {"op": "push", "inputs": ["tuned"], "params": {"repo": "me/{name}"}},
    }}
    path = tmp_path / "dist.yaml"
    path.write_text(yaml.safe_dump(pipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ZOO_CATALOG": str(tmp_path / "c.db"),
           "ZOO_STORE": str(tmp_path / "store")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "zoo", "build",
           str(path), "--reports", str(tmp_path / "reports")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cat = Catalog(tmp_path / "c.db", store=tmp_path / "store")
    assert sorted(r["ref"] for r in cat.ls()) == ["dist-base@1", "dist-tuned@1"]
    assert list(hub.state.repos) == ["me/dist-tuned"] and len(hub.state.repos["me/dist-tuned"].commits) == 1
