"""The merge engine's scheduler: jobs under an element budget, first fit."""
from __future__ import annotations

import threading
import time

import pytest

from merging.schedule import budget_for, run_within_budget


def test_budget_holds_the_largest_beside_a_medium_one_but_never_two_huge():
    sizes = [65, 65, 11, 11, 4, 1]
    assert budget_for(sizes, floor=0) == 65 + 11
    assert budget_for([3, 3], floor=64) == 64 + 3  # small models: the floor, plus one more


def test_small_jobs_run_beside_a_huge_one_while_the_other_huge_one_waits():
    """Jobs [huge A, huge B, small...] on two workers: while A runs, the other worker skips B
    (it does not fit) and does the small ones; the running sizes never exceed the budget."""
    sizes = {"A": 65, "B": 65, **{f"s{i}": 11 for i in range(4)}}
    running, peak, log = set(), [0], []
    lock = threading.Lock()
    a_started, small_done = threading.Event(), threading.Event()

    def work(name):
        with lock:
            running.add(name)
            peak[0] = max(peak[0], sum(sizes[n] for n in running))
            log.append(("start", name))
        if name == "A":
            a_started.set()
            assert small_done.wait(5), "the small jobs did not run beside A"
        elif name.startswith("s"):
            a_started.wait(5)
            if name == "s3":
                small_done.set()
        with lock:
            running.discard(name)
            log.append(("end", name))

    run_within_budget(list(sizes), sizes.__getitem__, work, workers=2, limit=budget_for(list(sizes.values()), 0))
    assert peak[0] <= 76
    assert log.index(("start", "B")) > log.index(("end", "A"))
    assert log.index(("end", "s3")) < log.index(("end", "A"))


def test_the_first_error_is_raised_and_no_new_job_starts_after_it():
    started = []

    def work(item):
        started.append(item)
        if item == 2:
            raise ValueError("bad tensor")
        time.sleep(0.01)

    with pytest.raises(ValueError, match="bad tensor"):
        run_within_budget(list(range(100)), lambda _: 1, work, workers=2, limit=10)
    assert len(started) < 10


def test_of_several_failing_jobs_the_earliest_in_order_is_raised():
    """Job 1 fails first, job 0 (running beside it) after: job 0's error is the one raised,
    as it would be whichever finished first."""
    one_failed = threading.Event()

    def work(item):
        if item == 0:
            assert one_failed.wait(5)
            raise ValueError("tensor 0")
        one_failed.set()
        raise ValueError("tensor 1")

    with pytest.raises(ValueError, match="tensor 0"):
        run_within_budget([0, 1], lambda _: 1, work, workers=2, limit=10)


def test_jobs_marked_first_are_handed_out_first_and_each_group_keeps_its_order():
    """The engine marks the largest tensors (a Llama's lm_head comes last in the checkpoint):
    run last, one would keep one thread busy while the others idle."""
    order = []
    items = ["s0", "s1", "H1", "s2", "H2", "s3"]
    run_within_budget(items, lambda _: 1, order.append, workers=1, limit=10, first=lambda n: n.startswith("H"))
    assert order == ["H1", "H2", "s0", "s1", "s2", "s3"]


def test_an_error_is_named_by_the_order_given_not_the_order_handed_out():
    """Job 1 is handed out first and fails first; job 0 fails after it: job 0's error is
    raised, as without the reordering."""
    zero_started, one_failed = threading.Event(), threading.Event()

    def work(item):
        if item == 0:
            zero_started.set()
            assert one_failed.wait(5)
            raise ValueError("tensor 0")
        assert zero_started.wait(5)
        one_failed.set()
        raise ValueError("tensor 1")

    with pytest.raises(ValueError, match="tensor 0"):
        run_within_budget([0, 1], lambda _: 1, work, workers=2, limit=10, first=lambda i: i == 1)
