"""The flusher: moves write-ahead-log records into the step table and the run index.

One background thread. Each round reads records from the checkpoint, hashes and chains the
steps, appends them to Delta in one commit (tagged with the WAL end position), then in one
SQLite transaction updates the span index and the runs and advances the checkpoint.

Exactly once: if the process dies after the Delta commit but before the SQLite commit,
the next round sees Delta's app-transaction version ahead of the checkpoint, rebuilds the
same batch (same records, same seqs, same hashes) and applies only the SQLite half.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
from sqlite_utils import Database

from otlp_receiver.chain import chain_hash, genesis_hash, step_record
from otlp_receiver.columns import STEP_COLUMN_NAMES
from otlp_receiver.ingest import IDLE_END, Sequencer
from otlp_receiver.model import StepType, make_step_id
from otlp_receiver.pricing import PriceTable
from otlp_receiver.progress import Progress
from otlp_receiver.store.gate import StoreGate
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.runs import apply_run_updates, stored_heads
from otlp_receiver.store.steps import StepTable
from otlp_receiver.usage_tally import TallyCache, UsageRow
from otlp_receiver.wal import WriteAheadLog

logger = logging.getLogger(__name__)

CHECKPOINT_KEY = "wal_checkpoint"
_NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(slots=True)
class Batch:
    """One flush round's worth of WAL records, decoded."""

    end: int
    rows: dict[str, list[Any]] = field(default_factory=lambda: {c: [] for c in STEP_COLUMN_NAMES})
    summaries: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # tenant, project, summary
    created: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    heads: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)  # (tenant, run) → (hash, next seq)
    heads_before: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, run) → head hash before
    usage_changed: set[tuple[str, str]] = field(default_factory=set)  # runs whose usage totals need recomputing
    new_spans: dict[tuple[str, str], tuple[int, list[str]]] = field(default_factory=dict)  # run → (first seq, ids)
    usage_rows: dict[tuple[str, str], list[UsageRow]] = field(default_factory=dict)  # run → its new spans' usage
    transitions: dict[tuple[str, str], tuple[str | None, str]] = field(default_factory=dict)
    """Filled while the batch is applied: run → (status before, status after) for every run it touched
    (before is None for a run this batch created)."""
    projects: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def step_count(self) -> int:
        """Steps in this batch."""
        return len(self.rows["seq"])


FlushListener = Callable[[Batch], None]
"""Called after a batch is committed (outside the transaction; must not fail the flush)."""
TransactionalHook = Callable[[Database, Batch], None]
"""Called inside the SQLite transaction that applies a batch, after the runs are updated: writes made
here commit atomically with the batch and its checkpoint (exactly once, also across a crash replay)."""



class FlushedMark:
    """The WAL position stored so far, and waiting for it (thread-safe; it only moves forward)."""

    def __init__(self, position: int) -> None:
        self.position = position
        self._changed = threading.Condition()

    def advance(self, position: int) -> None:
        """Records up to ``position`` are stored: wake the waiters."""
        with self._changed:
            self.position = max(self.position, position)
            self._changed.notify_all()

    def wait(self, position: int, timeout_s: float) -> bool:
        """Block until records up to ``position`` are stored; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self.position < position:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

class Flusher:
    """Background WAL → stores mover."""

    def __init__(self, wal: WriteAheadLog, index: RunIndex, steps: StepTable, sequencer: Sequencer,
                 prices: PriceTable, *, interval_s: float = 0.2, max_steps: int = 20_000,
                 compact_every_s: float = 60.0) -> None:
        self.wal, self.index, self.steps, self.sequencer, self.prices = wal, index, steps, sequencer, prices
        self.interval_s = interval_s
        self.max_steps = max_steps
        self.compact_every_s = compact_every_s
        self.listeners: list[FlushListener] = []
        self.hooks: list[TransactionalHook] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flushed = FlushedMark(self.checkpoint())
        self._last_compact = time.monotonic()
        self.last_flush_s = 0.0
        self.tallies = TallyCache()
        self.gate = StoreGate()
        """Each round and compaction is a turn of it (and so is each retention chunk beside this flusher): a
        backup pauses it for its snapshot (``otlp_receiver/store/backup.py``)."""
        self.progress = Progress()
        """Beats after each phase of a round (read and build, Delta append, SQLite commit); busy regions around compaction and the table's first write (and
        retention's deletes, which hold the step table: ``server/retention.py``), for the server's watchdog."""

    def checkpoint(self) -> int:
        """The WAL position up to which records are in both stores."""
        return int(self.index.get_meta(CHECKPOINT_KEY) or 0)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (after draining what the WAL already holds)."""
        self.drain()
        self._thread = threading.Thread(target=self._loop, name="traceward-flusher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Flush what is left and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.drain()

    def drain(self) -> None:
        """Flush until the WAL is empty (used at start-up and shutdown)."""
        while self.flush_once():
            pass

    def wait_flushed(self, position: int, timeout_s: float = 10.0) -> bool:
        """Block until records up to ``position`` are queryable."""
        return self._flushed.wait(position, timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if not self.flush_once():
                    self.wal.wait_for_data(self._flushed.position, self.interval_s)
                self._maybe_compact()
            except Exception:  # process boundary: log and keep the flusher alive
                logger.exception("flush round failed; retrying")
                self._stop.wait(1.0)

    # -- one round -------------------------------------------------------------------------------------------

    def flush_once(self) -> bool:
        """Move one batch of WAL records into the stores; False when there was nothing to do."""
        started = time.perf_counter()
        with self.gate.turn():
            batch = self._flush_batch()
        if batch is None:
            return False
        self.last_flush_s = time.perf_counter() - started
        for listener in self.listeners:
            try:
                listener(batch)
            except Exception:  # a listener (events, metrics) must never stall the flusher
                logger.exception("flush listener %r failed", listener)
        return True

    def _flush_batch(self) -> Batch | None:
        """One round's work on the stores (a turn of the gate); None when the WAL had nothing new."""
        checkpoint = self.checkpoint()
        delta_end = self.steps.committed_wal_end()
        records = self._read(checkpoint, delta_end)
        if not records:
            return None
        batch = self._build(records)
        self.progress.beat()  # each phase of a round is progress: a full batch may take seconds on a busy host
        if delta_end < batch.end and batch.step_count:
            self._append(batch, first=delta_end == 0)
            self.progress.beat()
        apply_run_updates(self.index, batch, self.prices, checkpoint_key=CHECKPOINT_KEY, hooks=self.hooks,
                          tallies=self.tallies)
        self._advance(batch.end)
        self.progress.beat()
        return batch

    def _append(self, batch: Batch, *, first: bool) -> None:
        if not first:
            self.steps.append(pa.table(batch.rows), wal_end=batch.end)
            return
        with self.progress.busy("first step table write"):  # creating the table: slower than any append after
            self.steps.append(pa.table(batch.rows), wal_end=batch.end)

    def _read(self, checkpoint: int, delta_end: int) -> list[tuple[bytes, int]]:
        """Records from the checkpoint, bounded in size (memory), ending exactly at Delta's end if it is ahead."""
        records: list[tuple[bytes, int]] = []
        size = 0
        for payload, end in self.wal.read_from(checkpoint):
            if checkpoint < delta_end < end:
                break  # rebuild exactly the batch Delta already committed, no more
            records.append((payload, end))
            size += len(payload)
            if end == delta_end or (delta_end <= checkpoint and size >= self.max_steps * 1024):
                break
        return records

    def _advance(self, end: int) -> None:
        self.sequencer.flushed(end)
        self.wal.drop_before(self.gate.drop_limit(end))  # a backup may still be copying the segments
        self._flushed.advance(end)

    def _maybe_compact(self) -> None:
        if time.monotonic() - self._last_compact < self.compact_every_s:
            return
        self._last_compact = time.monotonic()
        with self.gate.optional_removing_turn() as allowed:
            if not allowed:
                return  # a backup is copying the files compaction would vacuum: next time
            with self.progress.busy("compaction"):
                self.steps.compact(min_files=8)

    def _build(self, records: Sequence[tuple[bytes, int]]) -> Batch:
        batch = Batch(end=records[-1][1])
        for payload, _ in records:
            record = orjson.loads(payload)
            kind = record["kind"]
            if kind == "steps":
                self._add_steps(batch, record)
            elif kind == "run":
                batch.created.append((record["tenant"], record["project"], record["run"]))
            elif kind == "finish":
                batch.finished.append(record)
            elif kind == IDLE_END:
                batch.finished.extend({"kind": IDLE_END, "tenant": tenant, "run_id": run_id, "finished_ns": finished_ns,
                                       "step_count": step_count} for tenant, run_id, finished_ns, step_count
                                      in record["runs"])
        return batch

    def _add_steps(self, batch: Batch, record: dict[str, Any]) -> None:
        tenant, project, received_ns = record["tenant"], record["project"], record["received_ns"]
        for summary in record["runs"].values():
            batch.summaries.append((tenant, project, summary))
        self._fetch_heads(batch, tenant, record["items"])
        for item in record["items"]:
            batch.projects[(tenant, item[0])] = project
            f = self._step_row(batch, tenant, project, item, received_ns)
            for name, column in batch.rows.items():
                column.append(f.get(name))

    def _step_row(self, batch: Batch, tenant: str, project: str, item: list[Any], received_ns: int
                  ) -> dict[str, Any]:
        """One WAL item as a step-table row (its fields dict, completed), chained onto its run's head."""
        f: dict[str, Any]
        run_id, seq, f, payload_text, p_hash = item
        key = (tenant, run_id)
        prev = self._head(batch, key)
        meta, start_ns = f["redaction_meta"], f["start_ns"]
        c_hash = chain_hash(prev, step_record(seq=seq, type=f["type"], name=f["name"], trace_id=f["trace_id"],
                                              span_id=f["span_id"], parent_span_id=f["parent_span_id"],
                                              start_ns=start_ns, payload_hash=p_hash, redaction_meta=meta))
        batch.heads[key] = (c_hash, seq + 1)
        _note_usage(batch, key, seq, f)
        f.update(tenant_id=tenant, project_id=project, run_id=run_id, seq=seq, day=_day(start_ns or received_ns),
                 step_id=make_step_id(tenant, f["trace_id"], f["span_id"]), duration_ns=max(0, f["end_ns"] - start_ns),
                 cost_source="reported" if f["cost_usd"] is not None else None,
                 redaction_count=len(meta["paths"]) if meta else 0,
                 redaction_meta=orjson.dumps(meta).decode() if meta else None, payload=payload_text,
                 payload_hash=p_hash, prev_hash=prev, chain_hash=c_hash, schema_version=1, ingested_ns=received_ns)
        return f

    def _fetch_heads(self, batch: Batch, tenant: str, items: list[list[Any]]) -> None:
        """Where the chains of this record's runs stand before the batch (one query for the new ones)."""
        missing = [run_id for run_id in dict.fromkeys(item[0] for item in items)
                   if (tenant, run_id) not in batch.heads and (tenant, run_id) not in batch.heads_before]
        if missing:
            stored = stored_heads(self.index, tenant, missing)
            for run_id in missing:
                batch.heads_before[(tenant, run_id)] = stored.get(run_id) or genesis_hash(tenant, run_id)

    def _head(self, batch: Batch, key: tuple[str, str]) -> str:
        head = batch.heads.get(key)
        return head[0] if head is not None else batch.heads_before[key]


def _note_usage(batch: Batch, key: tuple[str, str], seq: int, f: dict[str, Any]) -> None:
    """Record a new step for the run update: its span id, its usage row, whether it can change the totals."""
    usage = (f["span_id"], f["parent_span_id"], f["type"], f["status"], f["start_ns"], f["model_name"],
             f["tool_name"], f["tool_call_id"], f["tokens_in"], f["tokens_out"], f["tokens_total"],
             f["tokens_cache_read"], f["tokens_cache_write"], f["tokens_reasoning"], f["cost_usd"])
    new = batch.new_spans.get(key)
    if new is None:
        batch.new_spans[key] = (seq, [usage[0]])
        batch.usage_rows[key] = [usage]
    else:
        new[1].append(usage[0])
        batch.usage_rows[key].append(usage)
    if is_usage_relevant(usage):
        batch.usage_changed.add(key)


def _day(ns: int) -> str:
    return _day_name(ns // _NS_PER_DAY)


@functools.lru_cache(maxsize=4096)
def _day_name(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86_400, tz=UTC).strftime("%Y-%m-%d")


def is_usage_relevant(row: UsageRow) -> bool:
    """Whether a new step (a usage row) can change a run's usage totals (model, tool, error, usage-bearing)."""
    return (row[2] in _USAGE_TYPES or row[3] == "error" or row[8] is not None or row[9] is not None
            or row[10] is not None or row[14] is not None)


_USAGE_TYPES = frozenset({StepType.MODEL, StepType.TOOL, StepType.ERROR})
