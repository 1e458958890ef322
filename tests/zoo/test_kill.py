"""Killed runs leave nothing that lasts: a `zoo merge` (and a `zoo add --copy`) killed with
SIGKILL at chosen moments (the output written but not renamed; the output moved into the
store but the catalog transaction not committed) adds no row; `zoo verify` reports what it
left (exit 1); the next write removes stale temporaries and `zoo gc` the orphan folder.
SIGTERM cleans up at once. The moments come from the test-only pause points of
`zoo.temporaries.pause_point` (ZOO_TEST_PAUSE)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.models import perturbed_copy

pytestmark = pytest.mark.slow


@pytest.fixture
def zoo_env(tmp_path, llama_dir):
    """A catalog with two models to merge, and a way to run `zoo` in a subprocess."""
    env = {**os.environ, "ZOO_CATALOG": str(tmp_path / "c.db"), "ZOO_STORE": str(tmp_path / "store"),
           "OMP_NUM_THREADS": "1"}
    env.pop("ZOO_TEST_PAUSE", None)
    ft = perturbed_copy(llama_dir, tmp_path / "ft")

    def zoo(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "zoo", *args], env=env, capture_output=True, text=True, timeout=300)
        assert not check or done.returncode == 0, done.stderr
        return done

    zoo("add", str(llama_dir), "--name", "a")
    zoo("add", str(ft), "--name", "b")
    return env, zoo, tmp_path / "store", ft


def _interruptible() -> None:
    """In the child: SIGINT at its default, as for a command typed at a terminal (a test run
    started as a background job inherits SIGINT ignored, and `zoo` rightly leaves an ignored
    SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_paused(env: dict, point: str, *args: str) -> subprocess.Popen:
    """Start `zoo ARGS` and return once it is paused at `point`."""
    proc = subprocess.Popen([sys.executable, "-m", "zoo", *args], env={**env, "ZOO_TEST_PAUSE": point},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)
    deadline = time.monotonic() + 120
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if line.strip() == f"ZOO_TEST_PAUSED {point}":
            return proc
    proc.kill()
    raise AssertionError(f"never paused at {point}: {''.join(seen)}")


def _names(zoo) -> list[str]:
    return [r["name"] for r in json.loads(zoo("ls", "--json").stdout)]


def _left(store: Path) -> list[str]:
    """Everything in the store that is not a catalogued model's folder."""
    return sorted(str(p.relative_to(store)) for p in store.iterdir() if p.name not in ("a", "b", "c"))


MERGE = ("merge", "--method", "linear", "--model", "a", "--model", "b", "--out", "merged")


@pytest.mark.parametrize("point", ["writing", "after-rename"])
def test_sigkill_leaves_no_row_verify_reports_and_the_next_write_and_gc_clear(zoo_env, point):
    env, zoo, store, ft = zoo_env
    proc = _start_paused(env, point, *MERGE)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert _names(zoo) == ["a", "b"]  # no row
    left = _left(store)
    if point == "writing":
        assert left and all(name.startswith(".") for name in left)  # hidden temporaries
    else:
        assert left == ["merged"] and (store / "merged" / "v1" / "model.safetensors").is_file()  # a visible orphan
    verify = zoo("verify", check=False)
    assert verify.returncode == 1
    assert ("stale temporary" if point == "writing" else f"orphan {store / 'merged' / 'v1'}") in verify.stdout

    zoo("add", str(ft), "--name", "c", "--copy")  # the next write to the store
    assert [n for n in _left(store) if n.startswith(".")] == []  # stale temporaries gone
    gc = zoo("gc")
    assert (point == "writing") or f"removed {store / 'merged' / 'v1'}" in gc.stdout
    assert _left(store) == []
    assert zoo("verify").returncode == 0
    zoo(*MERGE)  # and the merge runs, as if nothing had happened
    assert "merged" in _names(zoo)


def test_sigkill_during_add_copy(zoo_env):
    env, zoo, store, ft = zoo_env
    proc = _start_paused(env, "writing", "add", str(ft), "--name", "c", "--copy")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert _names(zoo) == ["a", "b"] and _left(store) != []
    gc = zoo("gc")
    assert "removed" in gc.stdout and _left(store) == []


@pytest.mark.parametrize("sig,point", [(signal.SIGTERM, "writing"), (signal.SIGTERM, "after-rename"),
                                       (signal.SIGINT, "after-rename")])
def test_sigterm_and_sigint_clean_up_at_once(zoo_env, sig, point):
    env, zoo, store, _ = zoo_env
    proc = _start_paused(env, point, *MERGE)
    proc.send_signal(sig)
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 128 + sig
    assert err.strip().splitlines() == [f"interrupted ({sig.name}); nothing was half-written"]
    assert _names(zoo) == ["a", "b"]
    assert _left(store) == [] and zoo("verify").returncode == 0  # nothing to collect
