"""The write-ahead log: an export is acknowledged only once its record is here.

Segment files ``wal-<n>.log`` hold length-prefixed, CRC-checked records:
``<u32 length><u32 crc32><payload>``. A position is ``segment << 40 | offset``
(an int, so positions compare). On open, a torn tail — a record half-written when
the process was killed, hence never acknowledged — is cut off so new records don't
follow garbage. The flusher reads from its checkpoint and, once the records are in
the stores, drops the segments that lie wholly before it.

A failed append (a full disk, an I/O error) may have written part of its record: that part is cut off
again, so the next record follows the last whole one. Left in place, the torn record would stop every reader,
and every record after it, acknowledged or not, would be unreadable (and cut off as a torn tail at the next
start). Such a failure raises ``NotAppendedError``: the caller may give the record's seqs out again. A record
written whole whose fsync failed stays (a plain ``StorageError``): it will be flushed, so a retry is a duplicate.

Thread-safe: one lock serialises appends; readers open their own file handles.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from otlp_receiver.errors import StorageError

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_SEGMENT_SHIFT = 40
_OFFSET_MASK = (1 << _SEGMENT_SHIFT) - 1
MAX_RECORD_BYTES = 256 * 1024 * 1024


class NotAppendedError(StorageError):
    """The append failed and nothing of its record is in the log: what it would have taken may be reused."""


def make_position(segment: int, offset: int) -> int:
    """Pack a (segment, offset) pair into one comparable int."""
    return (segment << _SEGMENT_SHIFT) | offset


def split_position(position: int) -> tuple[int, int]:
    """Unpack a position into (segment, offset)."""
    return position >> _SEGMENT_SHIFT, position & _OFFSET_MASK


def segment_path(directory: Path, segment: int) -> Path:
    """The file of segment number ``segment`` in a log directory."""
    return directory / f"wal-{segment:012d}.log"


class WriteAheadLog:
    """Append-only, segmented, CRC-checked log of ingest records."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True,
                 segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._new_data = threading.Condition(self._lock)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._segment = self._recover()
            self._file = self._open(self._segment)
        except OSError as exc:
            raise StorageError(f"cannot open write-ahead log in {self.directory}: {exc}") from exc
        self._offset = self._file.seek(0, os.SEEK_END)
        self._torn = False
        """Part of a failed record may still follow ``_offset`` (cutting it off failed too)."""

    # -- writing ---------------------------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Append one record durably; returns the position just after it."""
        if len(payload) > MAX_RECORD_BYTES:
            raise NotAppendedError("write-ahead log record too large")
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            try:
                if self._torn:
                    self._cut_torn_record()
                if self._offset and self._offset + len(frame) > self.segment_bytes:
                    self._rotate()
                self._write_whole(frame)
            except OSError as exc:
                self._cut_torn_record_or_remember()
                raise NotAppendedError(f"write-ahead log append failed: {exc}") from exc
            self._offset += len(frame)
            end = make_position(self._segment, self._offset)
            self._new_data.notify_all()
            if self.fsync:
                try:
                    os.fsync(self._file.fileno())
                except OSError as exc:
                    raise StorageError(f"write-ahead log fsync failed: {exc}") from exc
        return end

    def _write_whole(self, frame: bytes) -> None:
        """Write all of ``frame`` (unbuffered: a write may take only part of it, the next one raise)."""
        view = memoryview(frame)
        while view:
            view = view[self._file.write(view):]

    def _cut_torn_record(self) -> None:
        os.ftruncate(self._file.fileno(), self._offset)
        self._torn = False

    def _cut_torn_record_or_remember(self) -> None:
        try:
            self._cut_torn_record()
        except OSError:
            self._torn = True
            logger.exception("write-ahead log: cannot cut off a failed append's partial record yet")

    def end_position(self) -> int:
        """Position after the last appended record."""
        with self._lock:
            return make_position(self._segment, self._offset)

    def wait_for_data(self, after: int, timeout_s: float) -> bool:
        """Block until the log extends past ``after`` or the timeout passes."""
        with self._new_data:
            if make_position(self._segment, self._offset) > after:
                return True
            self._new_data.wait(timeout_s)
            return make_position(self._segment, self._offset) > after

    def _rotate(self) -> None:
        """Continue in a new segment (opened before the current one is closed: a failed open changes nothing)."""
        new = self._open(self._segment + 1)
        self._file.close()
        self._segment += 1
        self._file = new
        self._offset = 0

    def _open(self, segment: int) -> io.FileIO:
        return open(self._path(segment), "ab", buffering=0)  # noqa: SIM115 - held until the next rotation

    # -- reading ---------------------------------------------------------------------------------------------

    def read_from(self, position: int, *, max_records: int | None = None) -> Iterator[tuple[bytes, int]]:
        """Yield ``(payload, end_position)`` for records at or after ``position``."""
        segment, offset = split_position(position)
        count = 0
        last = self.end_position()
        last_segment = split_position(last)[0]
        for seg in self._segments_from(segment):
            start = offset if seg == segment else 0
            end = make_position(seg, start)
            for payload, end in self._read_segment(seg, start, last):
                yield payload, end
                count += 1
                if max_records is not None and count >= max_records:
                    return
            if seg < last_segment and split_position(end)[1] < self._path(seg).stat().st_size:
                raise StorageError(f"write-ahead log segment {seg} is corrupt at offset "
                                   f"{split_position(end)[1]}; the records after it stay on disk, unread")

    def _read_segment(self, segment: int, offset: int, last: int) -> Iterator[tuple[bytes, int]]:
        path = self._path(segment)
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        with handle:
            handle.seek(offset)
            while make_position(segment, offset) < last:
                record = _read_record(handle)
                if record is None:
                    return
                offset += _HEADER.size + len(record)
                yield record, make_position(segment, offset)

    def _segments_from(self, segment: int) -> list[int]:
        return [s for s in self._segment_numbers() if s >= segment]

    # -- housekeeping ------------------------------------------------------------------------------------------

    def drop_before(self, position: int) -> int:
        """Delete segments that lie wholly before ``position``; returns how many were removed."""
        segment, _ = split_position(position)
        removed = 0
        for seg in self._segment_numbers():
            if seg < segment and seg != self._segment:
                self._path(seg).unlink(missing_ok=True)
                removed += 1
        return removed

    def bytes_after(self, position: int) -> int:
        """Bytes of records after ``position`` (what the flusher has yet to move)."""
        segment, offset = split_position(position)
        total = 0
        for seg in self._segments_from(segment):
            size = self._size(seg)
            total += max(0, size - offset) if seg == segment else size
        return total

    def size_bytes(self) -> int:
        """Bytes currently held in all segments."""
        return sum(self._size(s) for s in self._segment_numbers())

    def _size(self, segment: int) -> int:
        """A segment's size; 0 once the flusher (maybe another process) has dropped it."""
        try:
            return self._path(segment).stat().st_size
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        """Close the current segment."""
        with self._lock:
            self._file.close()

    def _recover(self) -> int:
        segments = self._segment_numbers()
        if not segments:
            return 0
        last = segments[-1]
        good = self._valid_prefix(last)
        path = self._path(last)
        if good < path.stat().st_size:
            logger.warning("write-ahead log: cutting a torn tail of %d bytes from %s",
                           path.stat().st_size - good, path.name)
            with open(path, "r+b") as handle:
                handle.truncate(good)
        return last

    def _valid_prefix(self, segment: int) -> int:
        offset = 0
        with open(self._path(segment), "rb") as handle:
            while (record := _read_record(handle)) is not None:
                offset += _HEADER.size + len(record)
        return offset

    def _segment_numbers(self) -> list[int]:
        numbers = []
        for path in self.directory.glob("wal-*.log"):
            stem = path.stem.removeprefix("wal-")
            if stem.isdigit():
                numbers.append(int(stem))
        return sorted(numbers)

    def _path(self, segment: int) -> Path:
        return segment_path(self.directory, segment)


def _read_record(handle: BinaryIO) -> bytes | None:
    header = handle.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    length, crc = _HEADER.unpack(header)
    if length > MAX_RECORD_BYTES:
        return None
    payload = handle.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return payload
