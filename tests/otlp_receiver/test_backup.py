"""Tests for otlp_receiver.backup on real stores (WAL, SQLite index, Delta table) driven by the real flusher.

The server-level behaviour (the API route, the flusher process, restores under load) is in
``tests/server/test_backup.py``; here: what a restore replays, the gate's holds, torn WAL tails, verification.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import polars as pl
import pytest

from otlp_receiver.backup import (
    MANIFEST,
    BackupError,
    BackupSources,
    restore_backup,
    take_backup,
    verify_backup,
)
from otlp_receiver.errors import ConflictError
from otlp_receiver.flusher import Flusher
from otlp_receiver.ingest import IngestPipeline, Sequencer
from otlp_receiver.model import Span
from otlp_receiver.pricing import PriceTable
from otlp_receiver.store.gate import StoreGate
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from otlp_receiver.wal import WriteAheadLog, split_position
from tests.factories import make_child, make_span

TENANT, PROJECT = "t1", "p1"
PRICES = PriceTable.default()
SEGMENT_BYTES = 16 * 1024  # several WAL segments between the checkpoint and the end


@dataclass
class Stores:
    """A data dir's stores, as the server lays them out, with the real pipeline and flusher."""

    dir: Path
    index: RunIndex
    steps: StepTable
    wal: WriteAheadLog
    pipeline: IngestPipeline
    flusher: Flusher

    @classmethod
    def open(cls, root: Path) -> Stores:
        index = RunIndex(root / "traceward.sqlite3")
        wal, steps = WriteAheadLog(root / "wal", fsync=False, segment_bytes=SEGMENT_BYTES), StepTable(root / "steps")
        sequencer = Sequencer(index)
        return cls(root, index, steps, wal, IngestPipeline(wal, sequencer),
                   Flusher(wal, index, steps, sequencer, PRICES))

    @property
    def sources(self) -> BackupSources:
        return BackupSources(self.dir / "traceward.sqlite3", self.dir / "steps", self.dir / "wal",
                             key_files=(("redaction.key", self.dir / "redaction.key"),))

    def rows(self) -> pl.DataFrame:
        """Every stored step: run, seq, span and chain hash, in order."""
        self.steps.refresh()
        return self.steps.scan(TENANT).select("run_id", "seq", "span_id", "chain_hash").sort("run_id", "seq").collect()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "redaction.key").write_bytes(os.urandom(32))
    opened = Stores.open(tmp_path / "data")
    yield opened
    opened.wal.close()


def runs_of_spans(roots: list[Span], n: int) -> list[Span]:
    """``n`` children spread over the given runs (a few hundred bytes of attributes each)."""
    return [make_child(roots[i % len(roots)], name="chat gpt-4o", attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.input.messages": "x" * 300})
        for i in range(n)]


def test_a_restore_replays_the_wal_backlog_into_exactly_the_original_chains(stores: Stores, tmp_path: Path) -> None:
    roots = [make_span(name="invoke_agent", attributes={"gen_ai.operation.name": "invoke_agent"}) for _ in range(3)]
    stores.pipeline.ingest_spans(TENANT, PROJECT, roots)
    for _ in range(105):  # > 100 Delta commits: the copy starts from the table's checkpoint, not from version 0
        stores.pipeline.ingest_spans(TENANT, PROJECT, runs_of_spans(roots, 2))
        stores.flusher.flush_once()
    backlog = runs_of_spans(roots, 150)  # acknowledged, not flushed yet: only the WAL copy holds them
    stores.pipeline.ingest_spans(TENANT, PROJECT, backlog)
    summary = take_backup(stores.sources, tmp_path / "backup", gate=stores.flusher.gate,
                          wal_end=stores.wal.end_position())
    later = runs_of_spans(roots, 40)  # after the backup began: not in it
    stores.pipeline.ingest_spans(TENANT, PROJECT, later)
    stores.flusher.drain()

    assert summary["steps"]["checkpoint_version"] == 99
    assert summary["wal"]["records"] >= 1 and summary["wal"]["to"] > summary["wal"]["from"]
    assert split_position(summary["wal"]["to"])[0] > split_position(summary["wal"]["from"])[0]  # several segments
    restore_backup(tmp_path / "backup", tmp_path / "restored")
    restored = Stores.open(tmp_path / "restored")
    restored.flusher.drain()  # what a server does on start

    original, copy = stores.rows(), restored.rows()
    assert copy.height == 3 + 105 * 2 + 150
    later_ids = {s.span_id for s in later}
    assert copy.equals(original.filter(~pl.col("span_id").is_in(list(later_ids))))  # same seqs, same chain hashes
    for root in roots:
        assert restored.index.get_run_row(TENANT, root.trace_id)["head_hash"] == \
            copy.filter(pl.col("run_id") == root.trace_id)["chain_hash"][-1]
    # Ingest continues on the copy: a re-sent span is a duplicate, a new one gets the next seq.
    result = restored.pipeline.ingest_spans(TENANT, PROJECT, [backlog[0], *runs_of_spans(roots[:1], 1)])
    assert (result.accepted, result.duplicates) == (1, 1)
    restored.wal.close()


def test_while_a_backup_holds_the_files_the_flusher_keeps_them(stores: Stores) -> None:
    root = make_span()
    stores.pipeline.ingest_spans(TENANT, PROJECT, [root])
    stores.flusher.drain()
    gate = stores.flusher.gate
    with gate.paused():
        hold = gate.hold(stores.flusher.checkpoint())
    segment = split_position(stores.flusher.checkpoint())[0]
    for _ in range(20):  # the log moves several segments on
        stores.pipeline.ingest_spans(TENANT, PROJECT, runs_of_spans([root], 20))
        stores.flusher.flush_once()
    assert (stores.dir / "wal" / f"wal-{segment:012d}.log").exists()
    files = set(stores.steps.files(TENANT))
    stores.flusher.compact_every_s, stores.flusher._last_compact = 0, 0.0
    stores.flusher._maybe_compact()
    assert set(stores.steps.files(TENANT)) == files  # no compaction (and no vacuum) while held

    removed = threading.Event()
    deleting = threading.Thread(target=lambda: (gate.removing_turn().__enter__(), removed.set()), daemon=True)
    deleting.start()
    assert not removed.wait(0.3)  # a retention chunk waits for the hold
    gate.release(hold)
    assert removed.wait(10)
    gate.release(hold)  # idempotent
    stores.pipeline.ingest_spans(TENANT, PROJECT, runs_of_spans([root], 1))
    stores.flusher.flush_once()
    assert not (stores.dir / "wal" / f"wal-{segment:012d}.log").exists()  # dropped once released


def test_a_torn_wal_tail_is_left_out_and_the_copy_restores(stores: Stores, tmp_path: Path) -> None:
    root = make_span()
    stores.pipeline.ingest_spans(TENANT, PROJECT, [root, *runs_of_spans([root], 5)])
    end = stores.wal.end_position()
    stores.wal.close()
    last = max((stores.dir / "wal").glob("wal-*.log"))
    with open(last, "ab") as handle:
        handle.write(b"\x40\x00\x00\x00\x00\x00\x00\x00half a record")  # killed mid-append: never acknowledged

    summary = take_backup(stores.sources, tmp_path / "backup", gate=StoreGate())  # a stopped data dir

    assert summary["wal"] == {"from": 0, "to": end, "records": 1}
    assert (tmp_path / "backup" / "wal" / last.name).stat().st_size == split_position(end)[1]  # whole records
    assert verify_backup(tmp_path / "backup").ok
    restore_backup(tmp_path / "backup", tmp_path / "restored")
    restored = Stores.open(tmp_path / "restored")
    restored.flusher.drain()
    assert restored.rows().height == 6
    restored.wal.close()


def test_verify_finds_a_changed_a_missing_and_an_extra_file(stores: Stores, tmp_path: Path) -> None:
    stores.pipeline.ingest_spans(TENANT, PROJECT, [make_span()])
    stores.flusher.drain()
    take_backup(stores.sources, tmp_path / "backup", gate=stores.flusher.gate)
    backup = tmp_path / "backup"
    report = verify_backup(backup)
    assert report.ok and report.files_checked == len(orjson.loads((backup / MANIFEST).read_bytes())["files"])

    data_file = next((backup / "steps").rglob("*.parquet"))
    data_file.write_bytes(data_file.read_bytes()[:-1] + b"\x00")
    (backup / "redaction.key").unlink()
    (backup / "wal" / "stray.log").write_text("x")
    problems = verify_backup(backup).problems
    assert any(data_file.name in p and "sha256" in p for p in problems)
    assert any(p.startswith("redaction.key:") for p in problems)
    assert "wal/stray.log: not in the manifest" in problems
    with pytest.raises(BackupError, match="does not verify"):
        restore_backup(backup, tmp_path / "restored")
    (backup / MANIFEST).unlink()
    assert verify_backup(backup).problems == ("no manifest.json: not a complete backup",)


def test_a_failed_backup_leaves_nothing_that_looks_like_one(stores: Stores, tmp_path: Path) -> None:
    stores.pipeline.ingest_spans(TENANT, PROJECT, [make_span()])
    stores.flusher.drain()
    (stores.dir / "redaction.key").unlink()
    (stores.dir / "redaction.key").mkdir()  # unreadable as a file: the copy fails at the end
    with pytest.raises(BackupError, match="cannot write the backup"):
        take_backup(stores.sources, tmp_path / "backup", gate=stores.flusher.gate)
    assert list(tmp_path.iterdir()) == [stores.dir]  # no target, no partial directory
    assert not stores.flusher.gate.held  # and the flusher may drop and vacuum again

    (tmp_path / "taken").mkdir()
    with pytest.raises(ConflictError, match="already exists"):
        take_backup(stores.sources, tmp_path / "taken", gate=stores.flusher.gate)
