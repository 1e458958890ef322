"""Tensor jobs on a few threads under an element budget (peak memory a few tensors).

Each worker takes the first waiting job that fits beside those running. With plain
in-order dispatch, a worker that drew a huge tensor (embeddings, lm_head) while another
huge one ran held the budget and left every other worker idle behind it; here it takes the
small tensors after it meanwhile. The caller can have the largest jobs handed out first
(`first`): the engine does, so that no huge tensor is left to run alone at the end.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def budget_for(sizes: Sequence[int], floor: int = 64 * 1024 * 1024) -> int:
    """Room for the largest job (at least `floor` elements) beside one of the largest jobs
    at most half its size: two huge tensors never run at once, a huge one and a layer's
    matrices do."""
    big = max([floor, *sizes])
    return big + max([s for s in sizes if s <= big // 2], default=0)


def run_within_budget(items: Sequence[T], size: Callable[[T], int], work: Callable[[T], None], workers: int,
                      limit: int, first: Callable[[T], bool] | None = None) -> None:
    """work(item) for every item on `workers` threads, the sizes of the running items summing
    to at most `limit` (an item larger than `limit` runs alone). Items for which `first`
    holds are handed out before the rest (each group in the order given). The first error stops the
    handing out of new items; once the running ones end, the error of the earliest item
    (in the order given) among those that failed is raised, so that the same inputs name
    the same tensor whichever thread finished first (an interrupt before any error). So is
    an interrupt of the calling thread."""
    pending = list(enumerate(items))
    if first is not None:
        pending.sort(key=lambda entry: not first(entry[1]))  # (stable: the order given within each group)
    cond = threading.Condition()
    state = {"used": 0, "stop": False}
    errors: dict[int, BaseException] = {}

    def take() -> tuple[int, T, int] | None:
        with cond:
            while True:
                if state["stop"] or not pending:
                    return None
                for k, (index, item) in enumerate(pending):
                    n = min(size(item), limit)
                    if state["used"] + n <= limit:
                        state["used"] += n
                        del pending[k]
                        return index, item, n
                cond.wait()

    def worker() -> None:
        while (got := take()) is not None:
            index, item, n = got
            try:
                work(item)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                with cond:
                    errors[index] = e
                    state["stop"] = True
            finally:
                with cond:
                    state["used"] -= n
                    cond.notify_all()

    threads = [threading.Thread(target=worker, name=f"merge-{i}", daemon=True) for i in range(max(1, workers))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        with cond:
            state["stop"] = True
            cond.notify_all()
        for t in threads:
            t.join()
        raise
    if errors:
        interrupts = [i for i, e in errors.items() if not isinstance(e, Exception)]
        raise errors[min(interrupts or errors)]
