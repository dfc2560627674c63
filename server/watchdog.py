"""The flusher watchdog: a flusher that has work and makes no progress for TRACEWARD_FLUSHER_STALL_S is stalled.

*Work* is WAL bytes after the flusher's checkpoint, or a request to the flusher process still unanswered.
*Progress* is a committed batch, or a heartbeat from inside a long operation (``otlp_receiver/progress.py``:
compaction, a retention delete, the first Delta write; each for at most ``MAX_BUSY_FACTOR`` times the stall
limit). The stall clock starts at the later of the last progress and the moment work appeared, so an idle
flusher is never stalled, however long ago it last flushed; a flusher that crashes, deadlocks, is SIGSTOPped,
hangs in I/O or loops without committing is.

On a stall the watchdog calls ``on_stall`` (the server SIGKILLs a flusher process, whose restart replays the
WAL from the checkpoint, exactly once as after any crash; a thread cannot be killed), logs one error naming
the stall's length and the WAL backlog, counts it, and reports ``stalled`` until the flusher progresses again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

MAX_BUSY_FACTOR = 10.0
"""A long operation's heartbeats count as progress for at most this many stall limits (10 min by default):
a compaction wedged in I/O is a stall too, found later than one between batches."""
MAX_CHECK_INTERVAL_S = 1.0


class FlusherWatchdog:
    """Checks the flusher's progress from a thread of its own (``check`` is one look, for tests)."""

    def __init__(self, *, stall_s: float, backlog: Callable[[], int], waiting: Callable[[], bool],
                 last_progress: Callable[[], float], on_stall: Callable[[], str],
                 paused: Callable[[], bool] = lambda: False, clock: Callable[[], float] = time.monotonic) -> None:
        """``backlog``: unflushed WAL bytes; ``waiting``: a request to the flusher is unanswered;
        ``last_progress``: when the flusher last progressed (on ``clock``); ``on_stall``: act on a stall and
        say what was done (for the log); ``paused``: the flusher is (re)starting, which has a timeout of its
        own (its start-up drain reports progress, but waiting for an orphan's lock does not)."""
        self.stall_s = stall_s
        self.backlog, self.waiting, self.last_progress = backlog, waiting, last_progress
        self.on_stall, self.paused, self.clock = on_stall, paused, clock
        self.stalls = 0
        self.stalled = False
        self._work_since: float | None = None
        self._stalled_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Check every quarter of the stall limit (at most every second), in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="traceward-flusher-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop checking (before the flusher stops: its final drain may take long and is not a stall)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def check(self) -> None:
        """One look: note work appearing, recovery, or a new stall."""
        if self.paused():
            self._work_since = None  # the clock starts again once it runs
            return
        now = self.clock()
        backlog = self.backlog()
        if backlog <= 0 and not self.waiting():
            self._work_since = None
            self._recovered()
            return
        if self._work_since is None:
            self._work_since = now
        since = max(self._work_since, self.last_progress())
        if self.stalled and since > self._stalled_at:
            self._recovered()
        if not self.stalled and now - since >= self.stall_s:
            self._stall(now - since, backlog)

    def _stall(self, stalled_s: float, backlog: int) -> None:
        self.stalled, self._stalled_at = True, self.clock()
        self.stalls += 1
        try:
            action = self.on_stall()
        except Exception as exc:  # the report below must not be lost to a failing remedy
            logger.exception("acting on the flusher stall failed")
            action = f"acting on it failed ({type(exc).__name__})"
        logger.error("flusher stalled: no progress for %.1f s with %d bytes of write-ahead log unflushed%s "
                     "(limit TRACEWARD_FLUSHER_STALL_S=%g); %s", stalled_s, backlog,
                     " and a request waiting" if self.waiting() else "", self.stall_s, action)

    def _recovered(self) -> None:
        if self.stalled:
            self.stalled = False
            logger.warning("flusher progressing again after a stall")

    def _loop(self) -> None:
        interval = min(MAX_CHECK_INTERVAL_S, self.stall_s / 4)
        while not self._stop.wait(interval):
            try:
                self.check()
            except Exception:  # background boundary: a failed look (a WAL segment vanishing) is retried
                logger.exception("flusher watchdog check failed")
