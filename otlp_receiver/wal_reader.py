"""A read-only view of a write-ahead log that another process appends to (the flusher process's side).

The server process appends (``WriteAheadLog``); the flusher process reads through a ``WalReader``. The reader
never opens a segment for writing and never cuts a torn tail: a record the appender is still writing looks
torn from here (short, or a CRC mismatch), so reading simply stops before it and picks it up on a later
poll. It learns about new data by polling the segment files, not from the appender's condition variable.

``freeze()`` caps what the reader will ever return at the end on disk now: an orphaned flusher (its server
was killed) drains up to there and exits, instead of chasing records a restarted server appends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from otlp_receiver.errors import StorageError
from otlp_receiver.wal import WriteAheadLog, make_position, split_position


class WalReader(WriteAheadLog):
    """Read, wait for and drop records of a log appended by another process; never appends."""

    def __init__(self, directory: str | os.PathLike[str], *, poll_s: float = 0.005) -> None:  # noqa: D107
        # Deliberately not WriteAheadLog.__init__: that opens the last segment for appending and cuts its tail.
        self.directory = Path(directory)
        self.poll_s = poll_s
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
        """Poll until the log on disk extends past ``after`` or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while self.end_position() <= after:
            if time.monotonic() >= deadline:
                return False
            time.sleep(self.poll_s)
        return True

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
