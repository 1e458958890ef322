"""Commands started by a launcher (`accelerate launch`, `torchrun`) run once per process:
training is shared, but side effects (registering an output, pushing to the Hub) must
happen once, on the main process, with the others waiting for it."""
from __future__ import annotations

import os
from typing import Callable, TypeVar

T = TypeVar("T")


def launched_processes() -> int:
    """How many processes a launcher started for this command (1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _state():
    """accelerate's process state; CPU processes form a group only when asked for the CPU."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def barrier() -> None:
    """Wait until every launched process gets here (so all see the same catalog state)."""
    _state().wait_for_everyone()


def on_main_process(fn: Callable[[], T], others: Callable[[], None] | None = None) -> T | None:
    """Run `fn` on the main process only (`others` on the rest), then wait for everyone;
    an error on the main process is raised there after the barrier, so no rank hangs.
    Returns fn's result on the main process, None elsewhere."""
    state = _state()
    result, error = None, None
    if state.is_main_process:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised after the barrier
            error = e
    elif others is not None:
        others()
    state.wait_for_everyone()
    if error is not None:
        raise error
    return result
