"""Exclusive locks on a data dir (``fcntl.flock`` on a file in it), so two processes never share a role.

- ``server.lock``: held by the one ``traceward serve`` (the one WAL appender) of a data dir.
- ``flusher.lock``: held by whoever runs the flusher, the only writer of the Delta table: the flusher
  process, or the server itself when the flusher is a thread. A flusher process orphaned by a killed
  server keeps it until it has drained, so the next server's flusher waits for it.

The kernel drops a flock when its holder dies, however it dies, so a stale lock file never blocks anyone.
The holder's pid is written into the file, for the error message only.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO

from otlp_receiver.errors import ConfigError

logger = logging.getLogger(__name__)

SERVER_LOCK = "server.lock"
FLUSHER_LOCK = "flusher.lock"


class LockHeldError(ConfigError):
    """Another process holds the lock."""


class DataDirLock:
    """One exclusive lock file; ``acquire`` it, ``release`` it (or let the process end)."""

    def __init__(self, data_dir: Path, name: str) -> None:  # noqa: D107
        self.path = data_dir / name
        self._file: BinaryIO | None = None  # a file object, so a lock left behind is released when collected

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._file is not None

    def acquire(self, *, wait_s: float = 0.0, what: str) -> None:
        """Take the lock, waiting up to ``wait_s`` for its holder to let go; LockHeldError after that."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+b", buffering=0)  # noqa: SIM115 - held while the lock is
        fd = handle.fileno()
        deadline = time.monotonic() + wait_s
        logged = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(self.path)
                if time.monotonic() >= deadline:
                    handle.close()
                    raise LockHeldError(f"{what}: {self.path} is locked by process {holder} "
                                        f"(another Traceward on this data dir)") from None
                if not logged:
                    logger.warning("%s: waiting for process %s to release %s", what, holder, self.path)
                    logged = True
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._file = handle

    def release(self) -> None:
        """Let go of the lock (idempotent)."""
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"
