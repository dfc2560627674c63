"""Paging a run's steps (``read_step_page``, the body of ``GET /v1/runs/{run_id}/steps``): a page is read as the seq
range after the cursor, which relies on seqs being dense; a run that breaks that is still read completely."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from benchmarks.test_verify import RUN, SPAN_COLUMNS, chained_rows
from otlp_receiver.chain import genesis_hash
from otlp_receiver.store import steps as steps_module
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from server.routes.runs import read_step_page

TENANT = "t1"


def _store(path: Path, seqs: list[int]) -> Any:
    """A runtime-like object whose stores hold a run with exactly these seqs."""
    index, steps = RunIndex(path / "index.sqlite3"), StepTable(path / "steps")
    cols, _ = chained_rows(0, max(seqs) + 1, genesis_hash(TENANT, RUN), tenant=TENANT)
    keep = [i for i, seq in enumerate(cols["seq"]) if seq in set(seqs)]
    cols = {name: [values[i] for i in keep] for name, values in cols.items()}
    steps.append(pa.table(cols), wal_end=1)
    with index.transaction() as db:
        db.conn.executemany(f"INSERT INTO spans ({','.join(SPAN_COLUMNS)}) VALUES ({','.join('?' * 9)})",
                            zip(*(cols[c] for c in SPAN_COLUMNS), strict=True))
    return SimpleNamespace(index=index, steps=steps)


def _all_seqs(runtime: Any, step_count: int, limit: int, types: list[str] | None = None) -> list[int]:
    seqs: list[int] = []
    after = -1
    while True:
        rows = read_step_page(runtime, TENANT, RUN, after, limit + 1, types, step_count=step_count)
        seqs.extend(r["seq"] for r in rows[:limit])
        if len(rows) <= limit:
            return seqs
        after = rows[limit - 1]["seq"]


@pytest.mark.parametrize("limit", [1, 7, 50, 1000])
def test_pages_of_a_dense_run_cover_every_seq_once(tmp_path: Path, limit: int) -> None:
    runtime = _store(tmp_path, list(range(120)))
    assert _all_seqs(runtime, 120, limit) == list(range(120))
    assert _all_seqs(runtime, 120, limit, types=["model"]) == list(range(120))


@pytest.mark.parametrize("limit", [1, 7, 50])
def test_a_run_with_a_seq_gap_is_still_read_completely(tmp_path: Path, limit: int) -> None:
    seqs = [*range(0, 30), *range(45, 60)]  # not something ingest makes; the page must not end at the gap
    runtime = _store(tmp_path, seqs)
    assert _all_seqs(runtime, len(seqs), limit) == seqs


def test_a_page_reads_only_the_files_of_the_time_its_steps_started(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ids are random, so every file of a busy day has a run_id range spanning them all: a page must
    find its files by when its steps started (the span index knows), or each page reads the whole day."""
    index, steps = RunIndex(tmp_path / "index.sqlite3"), StepTable(tmp_path / "steps")
    prev, wal_end = genesis_hash(TENANT, RUN), 0
    for first in range(0, 120, 30):  # the run in four flush batches, each between two of other runs
        cols, prev = chained_rows(first, 30, prev, tenant=TENANT)
        for shift in (-10**9, 10**9):
            other = {**cols, "run_id": ["f" * 32] * 30, "start_ns": [s + shift + first for s in cols["start_ns"]]}
            wal_end += 1
            steps.append(pa.table(other), wal_end=wal_end)
        wal_end += 1
        steps.append(pa.table(cols), wal_end=wal_end)
        with index.transaction() as db:
            db.conn.executemany(f"INSERT INTO spans ({','.join(SPAN_COLUMNS)}) VALUES ({','.join('?' * 9)})",
                                zip(*(cols[c] for c in SPAN_COLUMNS), strict=True))
    assert len(steps.files(TENANT)) == 12
    runtime = SimpleNamespace(index=index, steps=steps)
    assert _all_seqs(runtime, 120, 25) == list(range(120))

    read: list[int] = []
    scan = steps_module.pl.scan_parquet
    monkeypatch.setattr(steps_module.pl, "scan_parquet", lambda files, **kw: read.append(len(files)) or scan(files, **kw))
    first = read_step_page(runtime, TENANT, RUN, -1, 10, None, step_count=120)
    middle = read_step_page(runtime, TENANT, RUN, 25, 10, None, step_count=120)  # seqs 26-35: two batches
    assert [r["seq"] for r in first] == list(range(10)) and [r["seq"] for r in middle] == list(range(26, 36))
    assert read == [1, 2]
