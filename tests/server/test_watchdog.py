"""The flusher watchdog's rules, on a fake clock: work and no progress for the limit is a stall; idle never is."""

from __future__ import annotations

import logging

import pytest

from server.watchdog import FlusherWatchdog

STALL_S = 10.0


class Flusher:
    """What the watchdog reads of a flusher, set by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.backlog = 0
        self.waiting = False
        self.progress = self.now
        self.paused = False
        self.kills = 0

    def kill(self) -> str:
        self.kills += 1
        return "killed it"

    def watchdog(self) -> FlusherWatchdog:
        return FlusherWatchdog(stall_s=STALL_S, backlog=lambda: self.backlog, waiting=lambda: self.waiting,
                               last_progress=lambda: self.progress, on_stall=self.kill,
                               paused=lambda: self.paused, clock=lambda: self.now)

    def run(self, dog: FlusherWatchdog, seconds: float, *, step_s: float = 1.0) -> None:
        for _ in range(int(seconds / step_s)):
            self.now += step_s
            dog.check()


@pytest.fixture
def flusher() -> Flusher:
    return Flusher()


def test_an_idle_flusher_is_never_stalled(flusher: Flusher) -> None:
    dog = flusher.watchdog()
    flusher.run(dog, 3_600)
    assert (dog.stalls, dog.stalled, flusher.kills) == (0, False, 0)


def test_work_after_a_long_idle_spell_gets_the_whole_limit(flusher: Flusher) -> None:
    dog = flusher.watchdog()
    flusher.run(dog, 600)  # last progress 10 minutes ago
    flusher.backlog = 4096
    flusher.run(dog, STALL_S - 2)
    assert dog.stalls == 0
    flusher.run(dog, 3)
    assert (dog.stalls, flusher.kills) == (1, 1)


def test_a_stall_is_reported_once_and_ends_with_progress(flusher: Flusher, caplog: pytest.LogCaptureFixture) -> None:
    dog = flusher.watchdog()
    flusher.backlog = 123_456
    with caplog.at_level(logging.ERROR, logger="server.watchdog"):
        flusher.run(dog, 5 * STALL_S)
    assert (dog.stalls, dog.stalled, flusher.kills) == (1, True, 1)
    (record,) = caplog.records
    assert "no progress for 10.0 s with 123456 bytes of write-ahead log unflushed" in record.getMessage()
    assert "killed it" in record.getMessage()

    flusher.progress = flusher.now + 1
    flusher.run(dog, 1)
    assert not dog.stalled
    flusher.run(dog, STALL_S + 1)  # stuck again: a second stall
    assert (dog.stalls, flusher.kills) == (2, 2)


def test_steady_progress_with_a_backlog_is_no_stall(flusher: Flusher) -> None:
    dog = flusher.watchdog()
    flusher.backlog = 1 << 20
    for _ in range(100):
        flusher.run(dog, STALL_S - 1)
        flusher.progress = flusher.now
    assert dog.stalls == 0


def test_an_unanswered_request_is_work_too(flusher: Flusher) -> None:
    dog = flusher.watchdog()
    flusher.waiting = True
    flusher.run(dog, STALL_S + 1)
    assert dog.stalls == 1


def test_a_restarting_flusher_is_not_judged_and_gets_a_fresh_limit(flusher: Flusher) -> None:
    dog = flusher.watchdog()
    flusher.backlog = 10
    flusher.run(dog, STALL_S + 1)
    assert dog.stalls == 1
    flusher.paused = True  # killed; its successor starts (imports, waits for the lock)
    flusher.run(dog, 5 * STALL_S)
    assert (dog.stalls, dog.stalled) == (1, True)  # degraded until the successor is ready
    flusher.paused, flusher.progress = False, flusher.now  # ready
    flusher.run(dog, STALL_S - 1)
    assert (dog.stalls, dog.stalled) == (1, False)


def test_a_failing_remedy_still_counts_and_logs(flusher: Flusher, caplog: pytest.LogCaptureFixture) -> None:
    def fail() -> str:
        raise OSError("no such process")

    dog = FlusherWatchdog(stall_s=STALL_S, backlog=lambda: 1, waiting=lambda: False, last_progress=lambda: 0.0,
                          on_stall=fail, clock=lambda: flusher.now)
    flusher.run(dog, STALL_S + 1)
    assert dog.stalls == 1
    assert any("flusher stalled" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
