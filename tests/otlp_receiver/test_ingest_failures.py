"""An export whose record never reaches the write-ahead log (a full disk) is refused whole, and its retry is
taken whole: no seq is lost, no span taken for a duplicate of itself, no REST run left half-created.

Real WAL, index, step table and flusher; the failure is the WAL's own refusal of a record over its size
limit (lowered for the test), which takes the same path as a write that fails for lack of space.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import otlp_receiver.wal
from otlp_receiver.errors import StorageError
from otlp_receiver.flusher import Flusher
from otlp_receiver.ingest import IngestPipeline, Sequencer
from otlp_receiver.pricing import PriceTable
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from otlp_receiver.wal import WriteAheadLog
from tests.factories import make_child, make_span, make_step

TENANT, PROJECT = "t1", "p1"


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[IngestPipeline, Flusher, StepTable]]:
    index, steps = RunIndex(tmp_path / "index.db"), StepTable(tmp_path / "steps")
    wal, sequencer = WriteAheadLog(tmp_path / "wal", fsync=False), Sequencer(index)
    yield IngestPipeline(wal, sequencer), Flusher(wal, index, steps, sequencer, PriceTable.default()), steps
    wal.close()


def test_a_refused_export_is_taken_whole_when_retried(stores: tuple[IngestPipeline, Flusher, StepTable],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, flusher, steps = stores
    root = make_span()
    first = [root, *(make_child(root) for _ in range(2))]
    second = [make_child(root) for _ in range(3)]
    assert pipeline.ingest_spans(TENANT, PROJECT, first).accepted == 3

    with monkeypatch.context() as patch:
        patch.setattr(otlp_receiver.wal, "MAX_RECORD_BYTES", 64)  # the log refuses the record, as a full disk
        with pytest.raises(StorageError):
            pipeline.ingest_spans(TENANT, PROJECT, second)
    retried = pipeline.ingest_spans(TENANT, PROJECT, second)
    assert (retried.accepted, retried.duplicates) == (3, 0)
    assert pipeline.ingest_spans(TENANT, PROJECT, second).duplicates == 3  # now it is a duplicate

    while flusher.flush_once():
        pass
    stored = steps.read_run(TENANT, root.trace_id)
    assert stored["seq"].to_list() == list(range(6))
    assert set(stored["span_id"]) == {s.span_id for s in first + second}


def test_a_refused_rest_run_can_be_created_again(stores: tuple[IngestPipeline, Flusher, StepTable],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, flusher, _ = stores
    run = {"run_id": make_step().trace_id, "name": "x" * 100, "tags": {}, "started_ns": 1}
    with monkeypatch.context() as patch:
        patch.setattr(otlp_receiver.wal, "MAX_RECORD_BYTES", 64)
        with pytest.raises(StorageError):
            pipeline.create_run(TENANT, PROJECT, run)
    pipeline.create_run(TENANT, PROJECT, run)  # not "already exists": it never did
