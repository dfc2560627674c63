"""How a background worker (the flusher) shows that it is making progress, for a watchdog to read.

Two signs: a *beat* at each unit of work done (a committed flush batch), and a *busy region* around a
single call that may legitimately take long without a beat (a compaction, a retention delete and its
vacuum, the Delta table's first write). A region counts as progress for at most ``max_busy_s``: a
compaction wedged in I/O is a stall too, only found later than one between beats.

Thread-safe; it never blocks the worker (a dict update under a lock). Not imported by anything that
decides what a stall is: that is the server's watchdog (``server/watchdog.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator


class Progress:
    """A worker's last beat and the long calls it is inside now."""

    def __init__(self) -> None:  # noqa: D107
        self.last_beat_s = time.monotonic()
        self._busy: dict[int, tuple[str, float]] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()

    def beat(self) -> None:
        """A unit of work is done."""
        self.last_beat_s = time.monotonic()

    @contextlib.contextmanager
    def busy(self, op: str) -> Iterator[None]:
        """Around a call that may take long without a beat (regions may overlap, from several threads)."""
        token = next(self._tokens)
        with self._lock:
            self._busy[token] = (op, time.monotonic())
        try:
            yield
        finally:
            with self._lock:
                del self._busy[token]
            self.beat()

    def busy_op(self) -> tuple[str, float] | None:
        """The longest-running busy region now: its name and when it began (monotonic), or None."""
        with self._lock:
            return min(self._busy.values(), key=lambda region: region[1], default=None)

    def alive_at(self, now_s: float, *, max_busy_s: float) -> float:
        """When the worker last showed progress: its last beat, or ``now_s`` while inside a busy region
        younger than ``max_busy_s`` (an older region counts until it reached that age)."""
        with self._lock:
            starts = [since for _, since in self._busy.values()]
        return max([self.last_beat_s, *(min(now_s, since + max_busy_s) for since in starts)])
