"""The forwarder's bounded on-disk queue: serialized OTLP exports waiting for the downstream.

One queue per signal (traces, logs), each in a directory of its own. Each export is one file
``<seq:020d>-<items>.pb`` (``items``: the spans or log records it holds) written under a temporary name and
renamed, so a restart finds whole exports only and resumes in order; files are not fsync'd (they survive a
process crash, not a power cut — the WAL, not this queue, is the durability boundary).

When full (``max_bytes``) the OLDEST queued exports are deleted to make room for the new one (never the one
being sent), counted in ``dropped_requests`` / ``dropped_items``: fresh data wins over stale data, and ingest
keeps going however long the downstream is away.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class QueuedExport:
    """One export waiting in the queue."""

    seq: int
    items: int
    """Spans or log records in it."""
    size: int
    path: Path


class DiskQueue:
    """A bounded FIFO of serialized exports, one file each; thread-safe; drops the oldest when full."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._items: deque[QueuedExport] = deque()
        self._bytes = 0
        self._inflight: int | None = None
        self.dropped_requests = self.dropped_items = 0
        for path in sorted(directory.iterdir()):
            item = _parse_name(path)
            if item is None:
                path.unlink(missing_ok=True)  # a temporary file from an interrupted write
                continue
            self._items.append(item)
            self._bytes += item.size
        self._next_seq = self._items[-1].seq + 1 if self._items else 1

    @property
    def depth(self) -> int:
        """Exports waiting (the one being sent included)."""
        return len(self._items)

    @property
    def depth_items(self) -> int:
        """Spans or log records waiting."""
        with self._lock:
            return sum(item.items for item in self._items)

    @property
    def size_bytes(self) -> int:
        """Bytes waiting."""
        return self._bytes

    def put(self, body: bytes, items: int) -> int:
        """Queue one export, dropping the oldest ones if it would not fit; returns how many were dropped."""
        with self._lock:
            if len(body) > self.max_bytes:
                self._count_drop(items)
                return 1
            dropped = 0
            while self._bytes + len(body) > self.max_bytes and self._drop_oldest():
                dropped += 1
            seq, self._next_seq = self._next_seq, self._next_seq + 1
            path = self.directory / f"{seq:020d}-{items}.pb"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(body)
            os.replace(tmp, path)
            self._items.append(QueuedExport(seq, items, len(body), path))
            self._bytes += len(body)
            return dropped

    def _drop_oldest(self) -> bool:
        """Delete the oldest export that is not being sent; False when there is none."""
        for i, item in enumerate(self._items):
            if item.seq != self._inflight:
                del self._items[i]
                self._bytes -= item.size
                item.path.unlink(missing_ok=True)
                self._count_drop(item.items)
                return True
        return False

    def _count_drop(self, items: int) -> None:
        self.dropped_requests += 1
        self.dropped_items += items

    def peek(self) -> tuple[QueuedExport, bytes] | None:
        """The oldest export and its body, marked in flight (so a full queue never drops it mid-send)."""
        with self._lock:
            while self._items:
                item = self._items[0]
                try:
                    body = item.path.read_bytes()
                except FileNotFoundError:  # removed behind our back: forget it
                    self._items.popleft()
                    self._bytes -= item.size
                    continue
                self._inflight = item.seq
                return item, body
            return None

    def ack(self, item: QueuedExport) -> None:
        """Remove an export once it was delivered (or permanently rejected)."""
        with self._lock:
            self._inflight = None
            if self._items and self._items[0].seq == item.seq:
                self._items.popleft()
                self._bytes -= item.size
            item.path.unlink(missing_ok=True)

    def release(self) -> None:
        """The in-flight export was not delivered: it stays first in line."""
        with self._lock:
            self._inflight = None


def _parse_name(path: Path) -> QueuedExport | None:
    stem, dash, items = path.stem.partition("-")
    if path.suffix != ".pb" or not dash or not stem.isdigit() or not items.isdigit():
        return None
    return QueuedExport(int(stem), int(items), path.stat().st_size, path)
