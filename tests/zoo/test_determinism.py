"""Seeded training and evaluation give the same bytes whatever the thread count
(`zoo.determinism`): the README's main job gives one result table on any machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import torch

from zoo.determinism import ONE_THREAD_UP_TO, reproducible, threads_for

# Trains the README example's tiny ViT for a few steps with a seed and prints the sha256 of
# its weights and its validation metrics; run under different OMP_NUM_THREADS.
TRAIN = """
import hashlib, json, torch
from tests.helpers.models import tiny_vit
from zoo.tasks import get_task
from zoo.training import TrainParams, train_model
model = tiny_vit(seed=3).train()
config = model.config.to_dict()
task = get_task("digits")
model, losses = train_model(model, task, config, TrainParams(task="digits", steps=40, lr=0.003, seed=5))
digest = hashlib.sha256()
for name, tensor in sorted(model.state_dict().items()):
    digest.update(name.encode() + tensor.contiguous().numpy().tobytes())
print(json.dumps({"threads": torch.get_num_threads(), "weights": digest.hexdigest(), "losses": losses,
                  "val": task.evaluate(model, config, "val")}))
"""


def run_with_threads(n: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
    out = subprocess.run([sys.executable, "-c", TRAIN], env=env, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_training_gives_the_same_weights_with_one_and_two_threads():
    one, two = run_with_threads(1), run_with_threads(2)
    assert (one["threads"], two["threads"]) == (1, 2)  # the processes did run with different thread counts
    assert one["weights"] == two["weights"]  # bit for bit
    assert one["losses"] == two["losses"] and one["val"] == two["val"]
    assert one["losses"][-1] < one["losses"][0]  # it trained


def test_a_seeded_training_run_in_two_folders_gives_the_same_entry(tmp_path):
    """Byte for byte, config and card included: nothing about where the files were (the
    folder transformers loaded the parent from) leaks into what is written."""
    from zoo import Catalog
    from zoo.training import new_model, train

    digests = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cat = Catalog(tmp_path / folder / "catalog.db", store=tmp_path / folder / "store")
        new_model(cat, "vit", name="base", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, image_size=8, patch_size=4, num_channels=1, num_labels=10)
        entry = train(cat, "base", "digits", out="tuned", steps=3, lr=0.01).entry
        assert "_name_or_path" not in (entry.config or {})
        digests.append(entry.digest)
    assert digests[0] == digests[1]


def test_tiny_cpu_models_run_on_one_thread_and_the_callers_count_comes_back():
    tiny = torch.nn.Linear(8, 8)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with reproducible(tiny):
            assert torch.get_num_threads() == 1
            assert torch.are_deterministic_algorithms_enabled()
            with reproducible(tiny):  # nesting keeps the state until the outer body leaves
                pass
            assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 2
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)


def test_the_state_comes_back_when_the_body_fails():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError):
            with reproducible(torch.nn.Linear(2, 2)):
                raise RuntimeError("boom")
        assert torch.get_num_threads() == 2 and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before)


def test_large_models_and_gpu_work_keep_the_callers_threads():
    large = torch.nn.ParameterList([torch.nn.Parameter(torch.empty(ONE_THREAD_UP_TO + 1))])  # counted, never run
    assert threads_for(torch.nn.Linear(4, 4)) == 1
    assert threads_for(large) is None
    assert threads_for(torch.nn.Linear(4, 4), cpu=False) is None  # a training loop that moves it to a GPU
    assert threads_for(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)) == 1  # several modules count together


def test_a_users_deterministic_setting_is_left_as_it_was():
    torch.use_deterministic_algorithms(True)  # strict: not warn-only
    try:
        with reproducible(torch.nn.Linear(2, 2)):
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_threads_overlapping_in_time_restore_the_process_wide_flag_once_both_left():
    inside, leave = threading.Event(), threading.Event()

    def worker():
        with reproducible(torch.nn.Linear(2, 2)):
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(10)
    with reproducible(torch.nn.Linear(2, 2)):
        pass
    assert torch.are_deterministic_algorithms_enabled()  # the worker is still inside
    leave.set()
    t.join()
    assert not torch.are_deterministic_algorithms_enabled()
