"""Readiness (``GET /readyz``): whether this server should get traffic now, and if not, why.

``/healthz`` is liveness: 200 while the process serves. Readiness is narrower: an orchestrator (a Kubernetes
readinessProbe, a load balancer's health check) takes a server that is not ready out of rotation, and puts it
back once it is ready again. The reasons form a closed set (``REASONS``), so machines can act on them:

- ``flusher_restarting``: the flusher process died or was killed, and its successor is not ready yet (it
  replays the write-ahead log from its checkpoint first). Exports are still acknowledged; they are not
  queryable until it is back.
- ``flusher_stalled``: the watchdog (``server/watchdog.py``) finds the flusher stalled.
- ``ingest_overloaded``: ingest refuses exports now (429 / RESOURCE_EXHAUSTED) because the unflushed
  write-ahead log is over TRACEWARD_WAL_MAX_BYTES. One ``IngestLoad`` decides both, so readiness and ingest
  never disagree.
- ``data_dir_not_writable``: a test file cannot be created, written, fsync'd and removed in the data directory
  or its write-ahead-log directory (a read-only mount, permissions, an I/O error), or such a write hangs.
- ``disk_full``: that write fails for lack of space, or less space is left than one export of the largest
  size the server accepts.

Before the server has started (write-ahead log replayed, flusher process ready), nothing listens on its ports,
which a probe counts as not ready too.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

REASONS: Final = ("flusher_restarting", "flusher_stalled", "ingest_overloaded", "data_dir_not_writable",
                  "disk_full")
OVERLOAD_RETRY_AFTER_S: Final = 2.0
"""What an export refused for overload is told to wait (``Retry-After`` / ``RetryInfo``), and /readyz too."""
STORAGE_CHECK_INTERVAL_S: Final = 1.0
"""The test write runs at most this often, however often the public endpoint is called."""
STORAGE_HUNG_S: Final = 5.0
"""A test write still unfinished after this long makes the data directory count as not writable."""
PROBE_NAME: Final = ".readyz-probe"


@dataclass(frozen=True, slots=True)
class IngestLoad:
    """How far the flusher is behind ingest, and whether ingest sheds load because of it."""

    wal_backlog_bytes: int
    wal_max_bytes: int

    @property
    def overloaded(self) -> bool:
        """Ingest refuses exports (429 / RESOURCE_EXHAUSTED) while this holds."""
        return self.wal_backlog_bytes > self.wal_max_bytes


@dataclass(frozen=True, slots=True)
class NotReady:
    """One reason not to send this server traffic: a code from ``REASONS`` and a sentence for people."""

    reason: str
    message: str
    retry_after_s: float | None = None
    """When checking again makes sense (None: it takes an operator, or its end cannot be foreseen)."""


def retry_after(reasons: Sequence[NotReady]) -> int | None:
    """Seconds for a ``Retry-After`` header: the longest hint, when every reason has one (all must clear)."""
    hints = [r.retry_after_s for r in reasons]
    if not hints or any(h is None for h in hints):
        return None
    return max(1, math.ceil(max(h for h in hints if h is not None)))


class Readiness:
    """Puts the reasons together; each source is a callable of the runtime, read at every check."""

    def __init__(self, *, flusher_restarting: Callable[[], bool], flusher_stalled: Callable[[], bool],
                 flusher_retry_after_s: float | None, ingest_load: Callable[[], IngestLoad],
                 storage: StorageProbe) -> None:
        """``flusher_retry_after_s``: when a restarting or stalled flusher may be back, if it comes back by
        itself (a process is restarted after a delay; a stalled thread needs the server restarted: None)."""
        self.flusher_restarting, self.flusher_stalled = flusher_restarting, flusher_stalled
        self.flusher_retry_after_s, self.ingest_load, self.storage = flusher_retry_after_s, ingest_load, storage

    def check(self) -> list[NotReady]:
        """Every reason that holds now, in ``REASONS`` order; empty when ready."""
        found: list[NotReady] = []
        if self.flusher_restarting():
            found.append(NotReady("flusher_restarting", "the flusher process is restarting; it replays the "
                                  "write-ahead log before new exports become queryable", self.flusher_retry_after_s))
        if self.flusher_stalled():
            found.append(NotReady("flusher_stalled", "the flusher has made no progress for TRACEWARD_FLUSHER_STALL_S "
                                  "with work waiting", self.flusher_retry_after_s))
        load = self.ingest_load()
        if load.overloaded:
            found.append(NotReady("ingest_overloaded", f"{load.wal_backlog_bytes} bytes of write-ahead log are "
                                  f"unflushed, over TRACEWARD_WAL_MAX_BYTES ({load.wal_max_bytes}): exports are "
                                  "refused until the flusher catches up", OVERLOAD_RETRY_AFTER_S))
        found.extend(self.storage.check())
        return found


class StorageProbe:
    """Test writes in the directories the server writes, at most once per ``interval_s``, never two at once."""

    def __init__(self, directories: Sequence[tuple[str, Path]], *, min_free_bytes: int,
                 interval_s: float = STORAGE_CHECK_INTERVAL_S, hung_s: float = STORAGE_HUNG_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``directories``: (what it is, for messages; where). ``min_free_bytes``: less free space is full."""
        self.directories, self.min_free_bytes = directories, min_free_bytes
        self.interval_s, self.hung_s, self.clock = interval_s, hung_s, clock
        self._lock = threading.Lock()
        self._last: list[NotReady] = []
        self._checked_at = -math.inf
        self._started_at = 0.0

    def check(self) -> list[NotReady]:
        """The latest result; a new test write when it is older than ``interval_s`` and none is running. A
        caller arriving while one runs gets the previous result, or not-writable once that write hangs."""
        if not self._lock.acquire(blocking=False):
            running_s = self.clock() - self._started_at
            if running_s >= self.hung_s:
                return [NotReady("data_dir_not_writable", f"a test write has not finished in {running_s:.0f} s")]
            return self._last
        try:
            if self.clock() - self._checked_at < self.interval_s:
                return self._last
            self._started_at = self.clock()
            found = self._probe_all()
            self._log_change(found)
            self._last, self._checked_at = found, self.clock()
            return found
        finally:
            self._lock.release()

    def _probe_all(self) -> list[NotReady]:
        found: dict[str, NotReady] = {}
        for what, directory in self.directories:
            failure = probe_directory(what, directory, min_free_bytes=self.min_free_bytes)
            if failure is not None:
                found.setdefault(failure.reason, failure)
        return [found[r] for r in REASONS if r in found]

    def _log_change(self, found: list[NotReady]) -> None:
        before = {r.reason for r in self._last}
        for failure in found:
            if failure.reason not in before:
                logger.error("not ready: %s (%s)", failure.reason, failure.message)
        if before and not found:
            logger.warning("storage writable again, with enough space")


def probe_directory(what: str, directory: Path, *, min_free_bytes: int) -> NotReady | None:
    """Create, write, fsync and remove a small file in ``directory``, then look at the free space. A full
    disk may refuse only the write or only the fsync (delayed allocation), a read-only one only the create."""
    path = directory / PROBE_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"traceward readiness probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink()
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        return _write_failure(what, exc)
    if free < min_free_bytes:
        return NotReady("disk_full", f"{free} bytes free in the {what}, less than one export of the largest size "
                        f"accepted ({min_free_bytes} bytes)")
    return None


def _write_failure(what: str, exc: OSError) -> NotReady:
    """The reason for a failed test write; the message names the error, never the path."""
    cause = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NotReady("disk_full", f"a test write in the {what} failed: {cause}")
    return NotReady("data_dir_not_writable", f"a test write in the {what} failed: {cause}")
