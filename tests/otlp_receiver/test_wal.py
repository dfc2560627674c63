"""Unit tests of the write-ahead log: positions, segments, recovery of torn tails, CRC checks."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from otlp_receiver.errors import StorageError
from otlp_receiver.wal import MAX_RECORD_BYTES, WriteAheadLog, make_position, split_position

HEADER = struct.Struct("<II")


def frame(payload: bytes) -> bytes:
    """The on-disk frame of one record: <u32 length><u32 crc32><payload>."""
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def read_all(wal: WriteAheadLog, position: int = 0) -> list[bytes]:
    return [payload for payload, _ in wal.read_from(position)]


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


def test_positions_pack_and_compare() -> None:
    assert split_position(make_position(3, 12345)) == (3, 12345)
    assert make_position(0, (1 << 40) - 1) < make_position(1, 0)
    assert make_position(2, 5) > make_position(1, 10**9)


def test_append_returns_end_positions_and_read_from_yields_them(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False)
    payloads = [b"first", b"", b"x" * 1000, b"\x00\xff binary"]
    ends = [wal.append(p) for p in payloads]
    expected_ends, offset = [], 0
    for p in payloads:
        offset += HEADER.size + len(p)
        expected_ends.append(make_position(0, offset))
    assert ends == expected_ends
    assert wal.end_position() == ends[-1]
    assert list(wal.read_from(0)) == list(zip(payloads, ends, strict=True))
    # Reading from any record's end position resumes right after it.
    assert read_all(wal, ends[0]) == payloads[1:]
    assert read_all(wal, ends[-1]) == []
    assert [p for p, _ in wal.read_from(0, max_records=2)] == payloads[:2]
    wal.close()


def test_file_format_is_length_crc_payload(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=True)
    wal.append(b"hello")
    wal.append(b"world!")
    wal.close()
    [segment] = segments(wal_dir)
    assert segment.name == "wal-000000000000.log"
    assert segment.read_bytes() == frame(b"hello") + frame(b"world!")


def test_segments_rotate_at_the_size_limit(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False, segment_bytes=100)
    payloads = [bytes([i]) * 40 for i in range(7)]  # 48-byte frames: two per segment
    ends = [wal.append(p) for p in payloads]
    assert [split_position(e)[0] for e in ends] == [0, 0, 1, 1, 2, 2, 3]
    assert [split_position(e)[1] for e in ends] == [48, 96, 48, 96, 48, 96, 48]
    assert len(segments(wal_dir)) == 4
    assert read_all(wal) == payloads
    assert read_all(wal, ends[1]) == payloads[2:]  # the end of segment 0 continues in segment 1
    assert read_all(wal, ends[2]) == payloads[3:]
    assert wal.size_bytes() == 7 * 48
    wal.close()


def test_a_record_bigger_than_a_segment_gets_its_own(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False, segment_bytes=64)
    ends = [wal.append(b"a" * 10), wal.append(b"b" * 500), wal.append(b"c" * 10)]
    assert [split_position(e)[0] for e in ends] == [0, 1, 2]
    assert read_all(wal) == [b"a" * 10, b"b" * 500, b"c" * 10]
    wal.close()


def test_drop_before_removes_only_whole_segments_before_the_position(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False, segment_bytes=100)
    payloads = [bytes([i]) * 40 for i in range(7)]
    ends = [wal.append(p) for p in payloads]
    assert wal.drop_before(ends[0]) == 0  # still inside segment 0
    assert wal.drop_before(ends[3]) == 1  # position in segment 1: segment 0 goes
    assert [p.name for p in segments(wal_dir)] == [f"wal-{n:012d}.log" for n in (1, 2, 3)]
    assert read_all(wal, ends[1]) == payloads[2:]  # from the start of segment 1, nothing lost
    assert wal.drop_before(make_position(99, 0)) == 2  # never the segment being written
    assert [p.name for p in segments(wal_dir)] == ["wal-000000000003.log"]
    assert read_all(wal, ends[5]) == payloads[6:]
    end = wal.append(b"after")
    assert read_all(wal, ends[6]) == [b"after"]
    assert split_position(end)[0] == 3
    wal.close()


def test_reopen_continues_after_the_last_good_record(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=True, segment_bytes=100)
    ends = [wal.append(bytes([i]) * 40) for i in range(3)]
    wal.close()
    reopened = WriteAheadLog(wal_dir, fsync=True, segment_bytes=100)
    assert reopened.end_position() == ends[-1]
    end = reopened.append(b"more")
    assert end == make_position(1, 48 + HEADER.size + 4)
    assert read_all(reopened) == [bytes([i]) * 40 for i in range(3)] + [b"more"]
    reopened.close()


@pytest.mark.parametrize("torn", [
    b"\x05",  # part of a header
    HEADER.pack(100, 0),  # header only
    frame(b"0123456789")[:-3],  # payload cut short
    HEADER.pack(MAX_RECORD_BYTES + 1, 0) + b"junk",  # absurd length
    HEADER.pack(4, 12345) + b"oops",  # complete frame with a wrong CRC
], ids=["half-header", "header-only", "short-payload", "absurd-length", "bad-crc"])
def test_torn_tail_is_cut_on_reopen(wal_dir: Path, torn: bytes) -> None:
    wal = WriteAheadLog(wal_dir, fsync=True)
    good = [wal.append(b"one"), wal.append(b"two")]
    wal.close()
    [segment] = segments(wal_dir)
    with open(segment, "ab") as handle:  # a write the process died in the middle of
        handle.write(torn)
    reopened = WriteAheadLog(wal_dir, fsync=True)
    assert segment.stat().st_size == split_position(good[-1])[1]
    assert reopened.end_position() == good[-1]
    end = reopened.append(b"three")
    assert read_all(reopened) == [b"one", b"two", b"three"]
    assert end == make_position(0, split_position(good[-1])[1] + HEADER.size + 5)
    reopened.close()
    assert read_all(WriteAheadLog(wal_dir)) == [b"one", b"two", b"three"]


FULL_DISK = """
import json, resource, signal, sys
from otlp_receiver.errors import StorageError
from otlp_receiver.wal import WriteAheadLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, a write fails (EFBIG) instead of killing us
wal = WriteAheadLog(sys.argv[1], fsync=True)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
ends = [wal.append(b"a" * 10_000)]
resource.setrlimit(resource.RLIMIT_FSIZE, (15_000, hard))  # the next record fits only in part, as on a full disk
try:
    wal.append(b"b" * 10_000)
    refused = None
except StorageError as exc:
    refused = exc.message
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
ends.append(wal.append(b"c" * 10_000))
print(json.dumps({"refused": refused, "ends": ends}))
"""


def test_an_append_that_fails_part_way_leaves_nothing_behind(wal_dir: Path) -> None:
    """A real short write then a failing one (RLIMIT_FSIZE, in a process of its own): the part written is cut
    off, so the records acknowledged after it stay readable, and are not cut off as a torn tail on reopening."""
    run = subprocess.run([sys.executable, "-c", FULL_DISK, str(wal_dir)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    result = json.loads(run.stdout)
    assert result["refused"].startswith("write-ahead log append failed")
    wal = WriteAheadLog(wal_dir)
    assert [(p[:1], end) for p, end in wal.read_from(0)] == [(b"a", result["ends"][0]), (b"c", result["ends"][1])]
    assert wal.end_position() == result["ends"][1]


def test_torn_tail_in_a_fresh_segment_after_rotation(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False, segment_bytes=100)
    ends = [wal.append(bytes([i]) * 40) for i in range(3)]  # segment 1 holds the third record
    wal.close()
    last = segments(wal_dir)[-1]
    last.write_bytes(last.read_bytes() + frame(b"lost")[:5])
    reopened = WriteAheadLog(wal_dir, fsync=False, segment_bytes=100)
    assert reopened.end_position() == ends[-1]
    reopened.append(b"next")
    assert read_all(reopened) == [bytes([i]) * 40 for i in range(3)] + [b"next"]
    reopened.close()


def test_crc_corruption_stops_reading_in_that_segment(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=True)
    ends = [wal.append(p) for p in (b"aaaa", b"bbbb", b"cccc")]
    wal.close()
    [segment] = segments(wal_dir)
    data = bytearray(segment.read_bytes())
    data[split_position(ends[0])[1] + HEADER.size] ^= 0xFF  # flip a payload byte of the second record
    segment.write_bytes(bytes(data))
    reader = WriteAheadLog(wal_dir, fsync=True)
    assert read_all(reader) == [b"aaaa"]  # neither the bad record nor anything after it
    assert read_all(reader, ends[1]) == []
    reader.close()


def test_corrupt_header_length_stops_reading(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False)
    ends = [wal.append(p) for p in (b"aaaa", b"bbbb", b"cccc")]
    offset = split_position(ends[0])[1]
    [segment] = segments(wal_dir)
    with open(segment, "r+b") as handle:  # corrupt the open log behind its back
        handle.seek(offset)
        handle.write(struct.pack("<I", 2))
    assert read_all(wal) == [b"aaaa"]
    wal.close()


def test_crc_corruption_in_an_older_segment_stops_reading_entirely(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False, segment_bytes=100)
    payloads = [bytes([i]) * 40 for i in range(4)]  # segments 0 and 1, two records each
    ends = [wal.append(p) for p in payloads]
    first = segments(wal_dir)[0]
    data = bytearray(first.read_bytes())
    data[split_position(ends[0])[1] + HEADER.size] ^= 0xFF  # second record of segment 0
    first.write_bytes(bytes(data))
    read: list[bytes] = []
    with pytest.raises(StorageError, match="corrupt"):  # loud, never a silent skip into segment 1
        read.extend(payload for payload, _ in wal.read_from(0))
    assert read == payloads[:1]
    wal.close()


def test_read_ignores_records_appended_after_the_read_started(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False)
    wal.append(b"a")
    reader = wal.read_from(0)
    assert next(reader)[0] == b"a"
    wal.append(b"b")  # after the read started: not part of this read
    assert list(reader) == []
    assert read_all(wal) == [b"a", b"b"]
    wal.close()


def test_concurrent_appends_are_all_kept_whole(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False, segment_bytes=4096)
    ends: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(50):
            end = wal.append(f"{n}:{i}".encode() * 7)
            with lock:
                ends.append(end)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = read_all(wal)
    assert sorted(records) == sorted(f"{n}:{i}".encode() * 7 for n in range(4) for i in range(50))
    assert len(set(ends)) == 200
    assert sorted(ends) == [end for _, end in wal.read_from(0)]
    wal.close()


def test_wait_for_data(wal_dir: Path) -> None:
    wal = WriteAheadLog(wal_dir, fsync=False)
    start = wal.end_position()
    assert wal.wait_for_data(start, 0.01) is False
    threading.Timer(0.05, wal.append, args=(b"x",)).start()
    assert wal.wait_for_data(start, 5.0) is True
    wal.close()


def test_oversized_record_is_refused(wal_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("otlp_receiver.wal.MAX_RECORD_BYTES", 10)
    wal = WriteAheadLog(wal_dir, fsync=False)
    with pytest.raises(StorageError):
        wal.append(b"x" * 11)
    assert read_all(wal) == []
    wal.close()


def test_unrelated_files_in_the_directory_are_ignored(wal_dir: Path) -> None:
    wal_dir.mkdir(parents=True)
    (wal_dir / "wal-notanumber.log").write_bytes(b"junk")
    (wal_dir / "README").write_text("hi")
    wal = WriteAheadLog(wal_dir, fsync=False)
    wal.append(b"ok")
    assert read_all(wal) == [b"ok"]
    wal.close()
