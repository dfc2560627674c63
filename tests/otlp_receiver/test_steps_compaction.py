"""Small files get compacted (issue 2), within bounded memory: flush batches are written sorted by (run_id, seq),
and compaction only bin-packs a partition's small files, never rewriting the files already at the target size."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.test_verify import chained_rows
from otlp_receiver.chain import genesis_hash
from otlp_receiver.store import steps as steps_module
from otlp_receiver.store.steps import StepTable

TENANT = "t1"
RUNS = [f"{i:032x}" for i in range(1, 6)]


def _batch(rng: random.Random, first_seq: int, per_run: int) -> pa.Table:
    """``per_run`` steps of each of RUNS from ``first_seq``, rows shuffled as a flush batch may hold them."""
    cols, _ = chained_rows(0, per_run * len(RUNS), genesis_hash(TENANT, RUNS[0]), tenant=TENANT)
    cols["run_id"] = [run for run in RUNS for _ in range(per_run)]
    cols["seq"] = [first_seq + i for _ in RUNS for i in range(per_run)]
    cols["step_id"] = [f"{run}-{seq}" for run, seq in zip(cols["run_id"], cols["seq"], strict=True)]
    cols["payload"] = [rng.randbytes(500).hex() for _ in cols["seq"]]  # incompressible: file size follows rows
    order = list(range(len(cols["seq"])))
    rng.shuffle(order)
    return pa.table({name: [values[i] for i in order] for name, values in cols.items()})


def _fill(table: StepTable, batches: int, *, per_run: int = 20, start: int = 0) -> None:
    rng = random.Random(batches)
    for b in range(batches):
        table.append(_batch(rng, start + b * per_run, per_run), wal_end=start + b + 1)


def _all_rows(table: StepTable) -> list[dict[str, Any]]:
    return table.scan(TENANT).sort("run_id", "seq").collect().to_dicts()


def test_each_flush_batch_is_written_sorted_by_run_and_seq(tmp_path: Path) -> None:
    table = StepTable(tmp_path / "steps")
    _fill(table, 2)
    for path in table.files(TENANT):
        keys = pq.read_table(path, columns=["run_id", "seq"]).to_pylist()
        assert keys == sorted(keys, key=lambda r: (r["run_id"], r["seq"]))


def test_small_files_are_merged_and_every_row_survives(tmp_path: Path) -> None:
    table = StepTable(tmp_path / "steps")
    _fill(table, 9)
    before = _all_rows(table)
    assert len(table.files(TENANT)) == 9
    table.compact(min_files=8)
    assert len(table.files(TENANT)) == 1
    assert _all_rows(table) == before
    for run in RUNS:
        seqs = table.read_run(TENANT, run, [before[0]["day"]])["seq"].to_list()
        assert seqs == list(range(9 * 20))


def test_a_partition_with_few_small_files_is_left_alone(tmp_path: Path) -> None:
    table = StepTable(tmp_path / "steps")
    _fill(table, 5)
    files = sorted(table.files(TENANT))
    table.compact(min_files=8)
    assert sorted(table.files(TENANT)) == files


def test_files_at_the_target_size_are_not_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = StepTable(tmp_path / "steps")
    _fill(table, 8)
    table.compact(min_files=8)
    (big,) = table.files(TENANT)
    monkeypatch.setattr(steps_module, "COMPACT_TARGET_BYTES", Path(big).stat().st_size)  # the merged file is "full"
    _fill(table, 8, per_run=2, start=1000)  # eight small files that fit in one
    before = _all_rows(table)
    table.compact(min_files=8)
    after = table.files(TENANT)
    assert big in after and len(after) == 2  # the full file untouched, the eight new ones merged into one
    assert _all_rows(table) == before
    assert pl.DataFrame(before)["step_id"].n_unique() == len(before)


def test_a_reader_sees_another_process_commits_once_marked_stale(tmp_path: Path) -> None:
    """The server's table follows the flusher process's commits lazily: an announced commit (``mark_stale``)
    is loaded by the next read, and only then; compacted-away files are never listed afterwards."""
    writer = StepTable(tmp_path / "steps")
    _fill(writer, 2)
    reader = StepTable(tmp_path / "steps")
    assert len(reader.files(TENANT)) == 2
    _fill(writer, 8, start=2)
    assert len(reader.files(TENANT)) == 2  # a snapshot: not reloaded on every commit
    reader.mark_stale()
    assert len(reader.files(TENANT)) == 10
    assert reader.committed_wal_end() == 10
    writer.compact(min_files=8)
    reader.mark_stale()
    files = reader.files(TENANT)
    assert len(files) < 10 and all(Path(f.removeprefix("file://")).exists() for f in files)
    assert reader.scan(TENANT).select(pl.len()).collect().item() == 10 * 20 * len(RUNS)
