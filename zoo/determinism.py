"""Seeded work that gives the same bytes whatever the machine's thread count.

On the CPU, a matrix product's result depends on how many intra-op threads split it (the
kernels block and sum differently), so the same seeded training run with OMP_NUM_THREADS=1
and =2 ends in different weights, and evaluations can flip an argmax. Tiny models therefore
run on one intra-op thread: their results then depend only on the seed, and one thread is
also the fastest for them (their matrices are too small for threads to pay off, and spare
threads that spin while another process holds the core make steps many times slower).
Larger models keep the caller's threads (speed first; their results depend on the thread
count). Torch's deterministic algorithms are on inside too (`warn_only`, so an op without a
deterministic version warns instead of failing). GPU work is left as it is: its thread
count changes nothing, and deterministic cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before
CUDA starts, which is the user's choice.

Training (`zoo.training.train_model`), task evaluation (`zoo.tasks`) and the few forward
passes operators make outside those use `reproducible(...)` or `@reproducible_method`."""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import torch

ONE_THREAD_UP_TO = 5_000_000  # parameters (all modules of the work together) that count as tiny

_lock = threading.Lock()
_active = 0  # bodies inside `reproducible` on the CPU (the deterministic flag is process-wide)
_was_on = False  # whether deterministic algorithms were on before the first of them entered

F = TypeVar("F", bound=Callable[..., Any])


def parameter_count(*modules: Any) -> int:
    """Parameters and buffers of the modules (anything without `.parameters()` counts 0)."""
    total = 0
    for m in modules:
        for get in ("parameters", "buffers"):
            try:
                total += sum(t.numel() for t in getattr(m, get)())
            except (AttributeError, TypeError):
                pass
    return total


def on_cpu(*modules: Any) -> bool:
    for m in modules:
        try:
            if any(t.device.type != "cpu" for t in m.parameters()):
                return False
        except (AttributeError, TypeError):
            pass
    return True


def threads_for(*modules: Any, cpu: bool | None = None) -> int | None:
    """The intra-op thread count for work on these modules: 1 for tiny models on the CPU,
    None (the caller's) otherwise. `cpu`: where the work runs, when not where the modules
    are now (a training loop moves them)."""
    cpu = on_cpu(*modules) if cpu is None else cpu
    return 1 if cpu and parameter_count(*modules) <= ONE_THREAD_UP_TO else None


@contextmanager
def reproducible(*modules: Any, cpu: bool | None = None) -> Iterator[None]:
    """Run the body with the thread count `threads_for(modules)` and, on the CPU,
    deterministic algorithms; both are restored after (nesting and threads are fine: the
    thread count is per Python thread under torch's OpenMP backend, and the process-wide
    deterministic flag is restored when the last body leaves)."""
    global _active, _was_on
    cpu = on_cpu(*modules) if cpu is None else cpu
    threads = threads_for(*modules, cpu=cpu)
    before = torch.get_num_threads()
    if cpu:
        with _lock:
            if _active == 0:
                _was_on = torch.are_deterministic_algorithms_enabled()  # a user's own setting stays
                if not _was_on:
                    torch.use_deterministic_algorithms(True, warn_only=True)
            _active += 1
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
        if cpu:
            with _lock:
                _active -= 1
                if _active == 0 and not _was_on:
                    torch.use_deterministic_algorithms(False)


def reproducible_method(fn: F) -> F:
    """For `method(self, model, ...)`: the body runs under `reproducible(model)`."""

    @functools.wraps(fn)
    def wrapper(self, model, *args, **kwargs):
        with reproducible(model):
            return fn(self, model, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def reproducible_on_self(fn: F) -> F:
    """For a method of a module: the body runs under `reproducible(self)`."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with reproducible(self):
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
