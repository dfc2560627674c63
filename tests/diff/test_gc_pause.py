"""The diff's pause of the garbage collector under concurrency (``diff.api._GcPause``).

What it guarantees: the collector is off while diffs run, for at most ``max_pause_s`` of continuous overlap,
and once none runs it is as the first diff of the overlap found it (on, normally; off if someone else had
turned it off).
"""

from __future__ import annotations

import dataclasses
import gc
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from diff.api import _GC_PAUSE, _gc_paused, _GcPause, diff_runs
from diff.normalize import BUILTIN_PROFILES
from otlp_receiver.errors import ConfigError
from tests.diff.fixtures import synthetic_pair


@pytest.fixture(autouse=True)
def collector_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with the collector on; the state the session had is put back afterwards.

    The shared pause gets no time bound here (a slow, shared machine must not lift it mid-test); the bound is
    tested on pauses of its own with a fake clock."""
    monkeypatch.setattr(_GC_PAUSE, "_max_pause_s", float("inf"))
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    assert _GC_PAUSE.holders == 0
    (gc.enable if was_enabled else gc.disable)()


def _overlap(first_leaves_first: bool) -> list[bool]:
    """Two diffs overlapping in two threads; ``gc.isenabled()`` seen after each step of the overlap."""
    seen: list[bool] = []
    steps = [threading.Event() for _ in range(4)]

    def diff(entered: threading.Event, leave: threading.Event) -> None:
        with _gc_paused():
            entered.set()
            leave.wait(5)

    threads = [threading.Thread(target=diff, args=(steps[0], steps[2])),
               threading.Thread(target=diff, args=(steps[1], steps[3]))]
    threads[0].start()
    steps[0].wait(5)
    seen.append(gc.isenabled())  # one diff in
    threads[1].start()
    steps[1].wait(5)
    seen.append(gc.isenabled())  # both in
    order = [(threads[0], steps[2]), (threads[1], steps[3])]
    for thread, leave in order if first_leaves_first else order[::-1]:
        leave.set()
        thread.join(5)
        seen.append(gc.isenabled())
    return seen


@pytest.mark.parametrize("first_leaves_first", [True, False])
def test_overlapping_diffs_keep_the_collector_off_until_the_last_leaves_then_turn_it_back_on(
        first_leaves_first: bool) -> None:
    assert _overlap(first_leaves_first) == [False, False, False, True]


def test_a_collector_found_off_stays_off() -> None:
    gc.disable()
    assert _overlap(first_leaves_first=True) == [False, False, False, False]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_diffs_that_keep_overlapping_lift_the_pause_after_max_pause_s() -> None:
    clock = FakeClock()
    pause = _GcPause(max_pause_s=1.0, clock=clock)
    pause.enter()  # t=0: a
    clock.now = 0.9
    pause.enter()  # b joins: still within the bound
    assert not gc.isenabled()
    pause.leave()  # a leaves
    clock.now = 1.5
    pause.enter()  # c arrives with the pause 1.5 s old: lifts it
    assert gc.isenabled()
    pause.leave()
    pause.leave()
    assert gc.isenabled() and pause.holders == 0
    clock.now = 10.0
    pause.enter()  # no overlap any more: a new pause
    assert not gc.isenabled()
    pause.leave()
    assert gc.isenabled()


def test_the_bound_never_turns_on_a_collector_found_off() -> None:
    clock = FakeClock()
    pause = _GcPause(max_pause_s=1.0, clock=clock)
    gc.disable()
    pause.enter()
    clock.now = 5.0
    pause.enter()
    pause.leave()
    pause.leave()
    assert not gc.isenabled()


def test_a_diff_that_fails_inside_the_pause_leaves_it() -> None:
    run_a, steps_a, run_b, steps_b = synthetic_pair(20)
    bad = dataclasses.replace(BUILTIN_PROFILES["default"], name="bad", ignore=("$[",))
    with pytest.raises(ConfigError):
        diff_runs(run_a, steps_a, run_b, steps_b, profile=bad)
    assert gc.isenabled()


def test_many_concurrent_diffs_leave_the_collector_on_and_see_it_off_while_they_run() -> None:
    run_a, steps_a, run_b, steps_b = synthetic_pair(100)
    profile = BUILTIN_PROFILES["default"]
    seen_on = threading.Event()

    def diff_and_sample() -> int:
        with _gc_paused():  # nested inside diff_runs' own pause: the count, not a flag, keeps it off
            diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=profile)
            if gc.isenabled():
                seen_on.set()
        return len(diff.pairs)

    with ThreadPoolExecutor(max_workers=4) as pool:
        sizes = list(pool.map(lambda _: diff_and_sample(), range(24)))
    assert len(set(sizes)) == 1
    assert not seen_on.is_set()
    assert gc.isenabled() and _GC_PAUSE.holders == 0
