"""The flusher process's read-only view of the WAL: it reads what the appender wrote, never cuts a record the
appender is still writing, drops old segments, and stops at the end it was frozen at."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from otlp_receiver.errors import StorageError
from otlp_receiver.wal import WriteAheadLog, make_position, split_position
from otlp_receiver.wal_reader import WalReader


def read_all(wal: WriteAheadLog, position: int = 0) -> list[bytes]:
    return [payload for payload, _ in wal.read_from(position)]


def test_the_reader_sees_what_the_appender_wrote_and_waits_for_more(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync=False, segment_bytes=64)
    reader = WalReader(tmp_path, poll_s=0.001)
    assert reader.end_position() == 0 and not reader.wait_for_data(0, 0.01)
    ends = [wal.append(b"record %d " % n + b"x" * 20) for n in range(5)]  # several segments
    assert reader.end_position() == wal.end_position() == ends[-1]
    assert read_all(reader) == [b"record %d " % n + b"x" * 20 for n in range(5)]
    assert reader.wait_for_data(ends[2], 0.01) and not reader.wait_for_data(ends[-1], 0.01)


def test_a_record_still_being_written_is_left_alone(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync=False)
    end = wal.append(b"whole")
    path = next(tmp_path.glob("wal-*.log"))
    size = path.stat().st_size
    payload = b"half written"
    with open(path, "ab") as handle:  # what a reader may see mid-append: the header and part of the payload
        handle.write(struct.pack("<II", len(payload), zlib.crc32(payload)) + payload[:4])
    reader = WalReader(tmp_path)
    assert read_all(reader) == [b"whole"]
    assert path.stat().st_size == size + 12  # not cut: the appender is still writing it
    with open(path, "ab") as handle:
        handle.write(payload[4:])
    assert [p for p, _ in reader.read_from(end)] == [payload]


def test_drop_before_and_freeze(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync=False, segment_bytes=64)
    ends = [wal.append(b"r" * 40) for _ in range(4)]  # one record per segment
    reader = WalReader(tmp_path)
    assert reader.drop_before(ends[1]) == 1
    assert len(list(tmp_path.glob("wal-*.log"))) == 3
    assert reader.freeze() == ends[-1]
    wal.append(b"after the freeze")
    assert reader.end_position() == ends[-1] and not reader.wait_for_data(ends[-1], 0.01)
    assert read_all(reader, make_start(ends[1])) == [b"r" * 40] * 3
    with pytest.raises(StorageError):
        reader.append(b"x")


def make_start(end: int) -> int:
    """The position of the first record of the segment ``end`` lies in."""
    return make_position(split_position(end)[0], 0)


def test_a_wake_ends_the_wait_at_once_and_each_position_is_announced_once(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync=False)
    reader = WalReader(tmp_path, poll_s=30.0)  # no help from polling
    announced: list[int] = []
    reader.on_wait = announced.append
    assert not reader.wait_for_data(0, 0.05) and not reader.wait_for_data(0, 0.05)
    assert announced == [0]

    def append_and_wake() -> None:
        time.sleep(0.1)
        wal.append(b"new")
        reader.wake()
    threading.Thread(target=append_and_wake).start()
    started = time.monotonic()
    assert reader.wait_for_data(0, 10.0)
    assert time.monotonic() - started < 2.0
    assert announced == [0]
