"""A read-only view of a write-ahead log that another process appends to (the flusher process's side).

The server process appends (``WriteAheadLog``); the flusher process reads through a ``WalReader``. The reader
never opens a segment for writing and never cuts a torn tail: a record the appender is still writing looks
torn from here (short, or a CRC mismatch), so reading simply stops before it and picks it up on a later
look. It cannot see the appender's condition variable: the appender's process tells it of new data instead
(``wake``, once ``on_wait`` has said where the reader waits: ``server/flushing.py``), and it polls the segment
files only as a fallback, every ``poll_s`` (0.2 s; it polled every 5 ms before, ~2.5 % of a core when idle).

``freeze()`` caps what the reader will ever return at the end on disk now: an orphaned flusher (its server
was killed) drains up to there and exits, instead of chasing records a restarted server appends.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from otlp_receiver.errors import StorageError
from otlp_receiver.wal import WriteAheadLog, make_position, split_position


class WalReader(WriteAheadLog):
    """Read, wait for and drop records of a log appended by another process; never appends."""

    def __init__(self, directory: str | os.PathLike[str], *, poll_s: float = 0.2) -> None:  # noqa: D107
        # Deliberately not WriteAheadLog.__init__: that opens the last segment for appending and cuts its tail.
        self.directory = Path(directory)
        self.poll_s = poll_s
        self.on_wait: Callable[[int], None] | None = None
        """Called with ``after`` when ``wait_for_data`` is about to block, once per position waited after."""
        self._woken = threading.Event()
        self._told = -1
        self.fsync = False
        self._cap: int | None = None
        self._last = 0  # the last segment seen

    def end_position(self) -> int:
        """Position after the last byte on disk (possibly inside a record still being written), or the cap.

        Polled every few milliseconds: two stats (the last segment, and whether the appender has rotated to
        the next one), not a directory listing, unless the last segment is gone."""
        segment = self._last
        while self._path(segment + 1).exists():
            segment += 1
        try:
            size = self._path(segment).stat().st_size
        except FileNotFoundError:
            segments = self._segment_numbers()
            if not segments:
                return 0
            segment, size = segments[-1], self._size(segments[-1])
        self._last = segment
        end = make_position(segment, size)
        return end if self._cap is None else min(end, self._cap)

    def freeze(self) -> int:
        """Never read past the end on disk as of now; returns that position."""
        self._cap = self.end_position()
        return self._cap

    def wait_for_data(self, after: int, timeout_s: float) -> bool:
        """Wait until the log on disk extends past ``after`` (woken, or polling) or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._woken.clear()  # before looking: a wake from here on ends the wait below at once
            if self.end_position() > after:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self.on_wait is not None and after != self._told:
                self._told = after
                self.on_wait(after)
            self._woken.wait(min(self.poll_s, remaining))

    def wake(self) -> None:
        """The appender says the log has grown (from another thread)."""
        self._woken.set()

    def drop_before(self, position: int) -> int:
        """Delete segments wholly before ``position`` (the appender only ever writes at or after it)."""
        segment, _ = split_position(position)
        removed = 0
        for seg in self._segment_numbers():
            if seg < segment:
                self._path(seg).unlink(missing_ok=True)
                removed += 1
        return removed

    def append(self, payload: bytes) -> int:  # noqa: D102
        raise StorageError("the flusher process's view of the write-ahead log is read-only")

    def close(self) -> None:  # noqa: D102
        return None
