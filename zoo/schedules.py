"""Learning-rate schedules by name (`zoo train --schedule NAME`): the core's `constant` and
`cosine`, and any a plugin registers with `register_schedule` (LEMON's `lemon`, from the
generators package). An unknown name loads every plugin's operator modules once, since
that is where plugins register theirs."""
from __future__ import annotations

import math
from typing import Callable

from .errors import ZooError

Schedule = Callable[[int], float]  # step -> learning rate
ScheduleFactory = Callable[[int, float, int], Schedule]  # (total steps, peak lr, warm-up steps)

_SCHEDULES: dict[str, ScheduleFactory] = {}


def register_schedule(name: str, factory: ScheduleFactory) -> None:
    _SCHEDULES[name] = factory


def get_schedule(name: str, steps: int, lr: float, warmup_steps: int = 0) -> Schedule:
    if name not in _SCHEDULES:
        from .plugins import load_operators

        load_operators()
    try:
        factory = _SCHEDULES[name]
    except KeyError:
        raise ZooError(f"unknown schedule {name!r} ({', '.join(sorted(_SCHEDULES))})") from None
    return factory(steps, lr, warmup_steps)


def _warmup(lr: float, warmup_steps: int, step: int) -> float:
    return lr * min(1.0, (step + 1) / warmup_steps) if warmup_steps else lr


def _constant(steps: int, lr: float, warmup_steps: int) -> Schedule:
    return lambda s: _warmup(lr, warmup_steps, s)


def _cosine(steps: int, lr: float, warmup_steps: int) -> Schedule:
    def at(s: int) -> float:
        if s < warmup_steps:
            return _warmup(lr, warmup_steps, s)
        return lr * 0.5 * (1 + math.cos(math.pi * (s - warmup_steps) / max(1, steps - warmup_steps)))

    return at


register_schedule("constant", _constant)
register_schedule("cosine", _cosine)
