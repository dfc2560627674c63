"""Reading only the steps that started within a time range: ``StepTable.files``/``scan(started_within=...)``.

Files and row groups are skipped on their ``start_ns`` statistics; every step of the given days that
started within that day's range is still read, however the files were written, compacted or rewritten
(each test compares with a read of every file).
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import WriterProperties, write_deltalake

from otlp_receiver.columns import PARTITION_COLUMNS
from otlp_receiver.store import steps as steps_module
from otlp_receiver.store.steps import STEP_SCHEMA, StepTable

TENANT = "t1"
DAYS = ("2026-03-01", "2026-03-02")
SECOND = 10**9


def rows(starts: list[int], *, day: str = DAYS[0], tenant: str = TENANT, run: str = "") -> pa.Table:
    """One step per start time, of random runs (or ``run``), with the columns the schema requires."""
    n = len(starts)
    rng = random.Random(sum(starts) + n)
    cols: dict[str, list[object]] = {field.name: [None] * n for field in STEP_SCHEMA}
    for name in ("project_id", "step_id", "type", "name", "status", "trace_id", "span_id", "payload",
                 "payload_hash", "prev_hash", "chain_hash"):
        cols[name] = ["x"] * n
    cols.update(tenant_id=[tenant] * n, day=[day] * n, seq=list(range(n)), kind=[1] * n, start_ns=starts,
                end_ns=starts, duration_ns=[0] * n, redaction_count=[0] * n, schema_version=[1] * n,
                ingested_ns=starts, run_id=[run or f"{rng.getrandbits(128):032x}" for _ in range(n)])
    return pa.table(cols, schema=STEP_SCHEMA)


def keys(frame: pl.DataFrame) -> list[tuple[str, str, int]]:
    return sorted(frame.select("day", "run_id", "start_ns").iter_rows())


def test_files_outside_the_range_are_left_out(tmp_path: Path) -> None:
    table = StepTable(tmp_path / "steps")
    table.append(rows([1, 2, 3]), wal_end=1)
    table.append(rows([4, 5, 6]), wal_end=2)
    table.append(rows([2, 9]), wal_end=3)
    table.append(rows([100]), wal_end=4)
    table.append(rows([1, 50], day=DAYS[1]), wal_end=5)
    table.append(rows([50, 60], tenant="t2"), wal_end=6)
    assert len(table.files(TENANT, started_within={DAYS[0]: (6, 100)})) == 3  # [4, 6] ends exactly at 6: kept
    assert len(table.files(TENANT, started_within={DAYS[0]: (7, 100)})) == 2
    assert len(table.files(TENANT, started_within={DAYS[0]: (0, 3)})) == 2  # [4, 6] begins after 3
    assert len(table.files(TENANT, started_within={DAYS[0]: (0, 4)})) == 3  # ...and exactly at 4: kept
    assert len(table.files(TENANT, started_within={DAYS[0]: (7, 99)})) == 1
    assert len(table.files(TENANT, started_within={DAYS[0]: (7, 100), DAYS[1]: (60, 70)})) == 2  # per day
    assert len(table.files(TENANT, started_within={DAYS[0]: (7, 100), DAYS[1]: (50, 50)})) == 3
    assert table.files(TENANT, started_within={}) == []
    assert table.files(TENANT, started_within={DAYS[0]: (101, 200)}) == []


def test_scan_reads_every_step_in_the_range_through_compaction(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps_module, "_WRITER", WriterProperties(compression="ZSTD", max_row_group_size=8))
    rng = random.Random(7)
    table = StepTable(tmp_path / "steps")
    for batch in range(12):  # start times mostly rising with the batches, with stragglers, on two days
        for day in DAYS:
            starts = [rng.randint(0, batch * 100 + 100) if rng.random() < 0.1 else batch * 100 + rng.randint(0, 99)
                      for _ in range(40)]
            table.append(rows(starts, day=day), wal_end=batch + 1)
        if batch == 7:
            table.compact(min_files=4)
    every = table.scan(TENANT).collect()
    for ranges in ({DAYS[0]: (650, 1199)}, {DAYS[0]: (650, 700), DAYS[1]: (1130, 1140)}, {DAYS[0]: (0, 0)},
                   {DAYS[1]: (1199, 1199)}, {DAYS[0]: (300, 420), DAYS[1]: (0, 5000)}):
        first = pl.col("day").replace_strict({d: lo for d, (lo, _) in ranges.items()}, default=None)
        last = pl.col("day").replace_strict({d: hi for d, (_, hi) in ranges.items()}, default=None)
        within = pl.col("start_ns").is_between(first, last)
        read = table.scan(TENANT, started_within=ranges).collect()
        assert keys(read.filter(within)) == keys(every.filter(within))
    assert len(table.files(TENANT, started_within={DAYS[0]: (1130, 1200)})) < len(table.files(TENANT, [DAYS[0]]))
    assert len(table.files(TENANT, started_within={DAYS[0]: (0, 50)})) < len(table.files(TENANT, [DAYS[0]]))


def test_a_file_without_statistics_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "steps"
    write_deltalake(path, rows([1, 2]), partition_by=list(PARTITION_COLUMNS),
                    configuration={"delta.dataSkippingNumIndexedCols": "0"})
    table = StepTable(path)
    assert len(table.files(TENANT, started_within={DAYS[0]: (100, 200)})) == 1
    assert table.scan(TENANT, started_within={DAYS[0]: (2, 5)}).collect()["start_ns"].to_list() == [2]
