"""The event log behind ``GET /v1/streams/events``: one SQLite row per event, its id the stream's event id.

Writers append inside the transaction of the change they describe, so an event exists exactly when
its change committed (and a WAL replay after a crash neither loses nor repeats it):

- :func:`record_flush_events` is a flusher transactional hook: ``run.started``, ``step.appended``
  (one per run per batch, with the seq range), ``run.finished`` and ``run.updated``;
- triggers on ``approvals`` (migration m008) log ``approval.created`` and ``approval.decided``;
- the findings scan logs ``finding.raised`` and the feedback route ``feedback.added``
  (``otlp_receiver/store/findings.py``).

An event's id is its tenant's next number (``events.seq``, counted in ``event_seqs``; one global sequence would
let a tenant read other tenants' activity off the gaps), taken in the transaction that writes the event, and
every write goes through the index's single writer connection, so a tenant's ids commit in increasing order: a
reader that remembers the last id it saw and asks for ``seq > last`` never misses an event and never sees one
twice. Old events are pruned by age; ``event_seqs`` remembers how far, so ids never go back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson
from sqlite_utils import Database

from otlp_receiver.model import RunStatus
from otlp_receiver.store.index import RunIndex

if TYPE_CHECKING:
    from otlp_receiver.flusher import Batch

EVENT_TYPES: Final = ("run.started", "run.updated", "run.finished", "step.appended", "approval.created",
                      "approval.decided", "finding.raised", "feedback.added")
FINAL_STATUSES: Final = frozenset(s.value for s in RunStatus if s is not RunStatus.RUNNING)
_RUN_FIELDS: Final = ("status", "name", "agent", "service", "started_ns", "finished_ns", "step_count",
                      "error_count", "cost_usd")


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event."""

    id: int
    type: str
    ts_ns: int
    run_id: str | None
    data: dict[str, Any]


def append_event(db: Database, tenant_id: str, event_type: str, *, run_id: str | None = None,
                 data: Mapping[str, Any] | None = None, ts_ns: int | None = None) -> int:
    """Append one event inside the caller's transaction; returns its id (the tenant's next number)."""
    seq = db.execute("INSERT INTO event_seqs (tenant_id, last) VALUES (?, 1) ON CONFLICT (tenant_id) "
                     "DO UPDATE SET last = last + 1 RETURNING last", [tenant_id]).fetchone()[0]
    db.execute("INSERT INTO events (tenant_id, seq, ts_ns, type, run_id, data) VALUES (?, ?, ?, ?, ?, ?)",
               [tenant_id, seq, ts_ns or time.time_ns(), event_type, run_id, orjson.dumps(dict(data or {})).decode()])
    return int(seq)


def record_flush_events(db: Database, batch: Batch) -> None:
    """Flusher hook: the run and step events of one batch, in the batch's transaction."""
    now = time.time_ns()
    for (tenant, run_id), (before, after) in batch.transitions.items():
        if not after:
            continue  # a finish record for a run that does not exist
        run = _run_fields(db, tenant, run_id)
        if before is None:
            append_event(db, tenant, "run.started", run_id=run_id, data=run, ts_ns=now)
        appended = batch.new_spans.get((tenant, run_id))
        if appended is not None:
            first_seq, span_ids = appended
            last_seq = batch.heads[(tenant, run_id)][1] - 1 if (tenant, run_id) in batch.heads else first_seq
            append_event(db, tenant, "step.appended", run_id=run_id, ts_ns=now,
                         data={"run_id": run_id, "first_seq": first_seq, "last_seq": last_seq,
                               "count": len(span_ids)})
        if after in FINAL_STATUSES and before not in FINAL_STATUSES:
            append_event(db, tenant, "run.finished", run_id=run_id, data=run, ts_ns=now)
        elif before is not None:
            append_event(db, tenant, "run.updated", run_id=run_id, data=run, ts_ns=now)


def _run_fields(db: Database, tenant_id: str, run_id: str) -> dict[str, Any]:
    row = db.execute(f"SELECT {', '.join(_RUN_FIELDS)} FROM runs WHERE tenant_id = ? AND run_id = ?",
                     [tenant_id, run_id]).fetchone()
    fields = dict(zip(_RUN_FIELDS, row, strict=True)) if row else {}
    return {"run_id": run_id, **fields}


def read_events(index: RunIndex, tenant_id: str, *, after_id: int, limit: int = 500) -> list[Event]:
    """The tenant's events with ids above ``after_id``, oldest first."""
    rows = index.reader.conn.execute(
        "SELECT seq, type, ts_ns, run_id, data FROM events WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        [tenant_id, after_id, limit]).fetchall()
    return [Event(r[0], r[1], r[2], r[3], orjson.loads(r[4])) for r in rows]


def last_event_id(index: RunIndex, tenant_id: str) -> int:
    """The id of the tenant's newest event ever written (0 when none): where a new stream starts."""
    row = index.reader.conn.execute("SELECT last FROM event_seqs WHERE tenant_id = ?", [tenant_id]).fetchone()
    return int(row[0]) if row else 0


def pruned_through(index: RunIndex, tenant_id: str) -> int:
    """The tenant's highest event id pruning may have deleted (0 when nothing was pruned): a client resuming
    from an id below it may have missed events."""
    row = index.reader.conn.execute("SELECT pruned_through FROM event_seqs WHERE tenant_id = ?",
                                    [tenant_id]).fetchone()
    return int(row[0]) if row else 0


def prune_events(index: RunIndex, *, before_ns: int, limit: int = 10_000) -> int:
    """Delete up to ``limit`` events older than ``before_ns`` (oldest first); returns how many."""
    with index.transaction() as db:
        top = db.execute("SELECT max(id) FROM (SELECT id FROM events WHERE ts_ns < ? ORDER BY id LIMIT ?)",
                         [before_ns, limit]).fetchone()[0]
        if top is None:
            return 0
        db.execute("UPDATE event_seqs SET pruned_through = max(pruned_through, pruned.seq) FROM "
                   "(SELECT tenant_id, max(seq) AS seq FROM events WHERE id <= ? AND ts_ns < ? GROUP BY tenant_id) "
                   "AS pruned WHERE event_seqs.tenant_id = pruned.tenant_id", [top, before_ns])
        cursor = db.execute("DELETE FROM events WHERE id <= ? AND ts_ns < ?", [top, before_ns])
        return int(cursor.rowcount)
