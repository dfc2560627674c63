"""What the failure scan and people say about runs: findings, the scan queue, and feedback (SQLite).

- **Scan queue** (``finding_scans``): :func:`queue_finished_runs` is a flusher transactional hook that
  queues every run whose status became final in the batch, atomically with the batch (a crash
  cannot lose a finished run's scan). :func:`queue_idle_runs` queues running runs idle past a window.
  A scanned row remembers the run's ``updated_ns``, so an idle run is scanned again only after it
  changed.
- **Findings**: stored by the deterministic id of the scan (``sha256(run_id:kind:first seq)``), so a
  rescan updates a finding instead of duplicating it; ``finding.raised`` is logged once, when a
  finding is first stored.
- **Feedback**: score / label / comment on a run by a person or an application (``feedback.added``).

Plain rows in and out: this module must not import ``analysis`` (the layer above).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlite_utils import Database

from otlp_receiver.store import cursor as _cursor
from otlp_receiver.store.events import FINAL_STATUSES, append_event
from otlp_receiver.store.index import RunIndex

if TYPE_CHECKING:
    from otlp_receiver.flusher import Batch


@dataclass(frozen=True, slots=True)
class StoredFinding:
    """A finding as stored (``step_seqs`` link it to the steps it is about)."""

    finding_id: str
    run_id: str
    kind: str
    severity: str
    message: str
    step_seqs: tuple[int, ...]
    detected_ns: int
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedScan:
    """A run waiting for the findings scan, and when it was queued (the claim token)."""

    tenant_id: str
    run_id: str
    queued_ns: int


# -- scan queue ------------------------------------------------------------------------------------------------

def queue_finished_runs(db: Database, batch: Batch) -> None:
    """Flusher hook: queue the runs whose status became final in this batch."""
    now = time.time_ns()
    rows = [(tenant, run_id, now) for (tenant, run_id), (before, after) in batch.transitions.items()
            if after in FINAL_STATUSES and before != after]
    if rows:
        db.conn.executemany(_QUEUE_SQL, rows)


_QUEUE_SQL = ("INSERT INTO finding_scans (tenant_id, run_id, queued_ns) VALUES (?, ?, ?) ON CONFLICT "
              "(tenant_id, run_id) DO UPDATE SET queued_ns = excluded.queued_ns, scanned_ns = NULL")


def queue_idle_runs(index: RunIndex, *, now_ns: int, idle_ns: int, limit: int = 1000) -> int:
    """Queue running runs without activity for ``idle_ns`` that changed since their last scan.

    Log-only runs are left out: they are not abrupt ends but runs without spans, which end when idle
    (``runs.idle_log_only_runs``) and are scanned then, as finished runs."""
    cutoff = now_ns - idle_ns
    rows = index.query(
        "SELECT r.tenant_id, r.run_id FROM runs r WHERE r.status = 'running' AND r.log_only = 0 AND "
        "(r.last_end_ns < ? OR (r.last_end_ns IS NULL AND r.started_ns < ?)) AND NOT EXISTS ("
        "SELECT 1 FROM finding_scans s WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id AND "
        "(s.scanned_ns IS NULL OR s.run_updated_ns = r.updated_ns)) LIMIT ?", [cutoff, cutoff, limit])
    if rows:
        with index.transaction() as db:
            db.conn.executemany(_QUEUE_SQL, [(r["tenant_id"], r["run_id"], now_ns) for r in rows])
    return len(rows)


def queued_scans(index: RunIndex, *, limit: int) -> list[QueuedScan]:
    """The oldest queued runs, up to ``limit``."""
    rows = index.reader.conn.execute(
        "SELECT tenant_id, run_id, queued_ns FROM finding_scans WHERE scanned_ns IS NULL "
        "ORDER BY queued_ns LIMIT ?", [limit]).fetchall()
    return [QueuedScan(*row) for row in rows]


def queue_depth(index: RunIndex) -> int:
    """How many runs wait for the findings scan."""
    return int(index.reader.conn.execute("SELECT count(*) FROM finding_scans WHERE scanned_ns IS NULL").fetchone()[0])


def save_scan(index: RunIndex, tenant_id: str, scanned: Sequence[QueuedScan],
              findings: Sequence[StoredFinding], *, now_ns: int) -> list[StoredFinding]:
    """Store the findings of scanned runs and mark them scanned, in one transaction.

    A run re-queued while it was being scanned (its ``queued_ns`` changed) stays queued.
    Returns the findings stored for the first time (a ``finding.raised`` event each).
    """
    new: list[StoredFinding] = []
    with index.transaction() as db:
        for f in findings:
            if _upsert_finding(db, tenant_id, f, now_ns):
                new.append(f)
                append_event(db, tenant_id, "finding.raised", run_id=f.run_id, data=finding_to_dict(f), ts_ns=now_ns)
        db.conn.executemany(
            "UPDATE finding_scans SET scanned_ns = ?, run_updated_ns = (SELECT updated_ns FROM runs r WHERE "
            "r.tenant_id = finding_scans.tenant_id AND r.run_id = finding_scans.run_id) "
            "WHERE tenant_id = ? AND run_id = ? AND queued_ns = ?",
            [(now_ns, s.tenant_id, s.run_id, s.queued_ns) for s in scanned])
    return new


def _upsert_finding(db: Database, tenant_id: str, f: StoredFinding, now_ns: int) -> bool:
    """Insert or refresh one finding; True when it is new."""
    seqs = orjson.dumps(list(f.step_seqs)).decode()
    cursor = db.execute(
        "UPDATE findings SET message = ?, severity = ?, step_seqs = ?, updated_ns = ? "
        "WHERE tenant_id = ? AND finding_id = ?", [f.message, f.severity, seqs, now_ns, tenant_id, f.finding_id])
    if cursor.rowcount:
        return False
    db.execute("INSERT INTO findings (tenant_id, finding_id, run_id, kind, severity, message, step_seqs, "
               "detected_ns, updated_ns, agent) VALUES (?,?,?,?,?,?,?,?,?,?)",
               [tenant_id, f.finding_id, f.run_id, f.kind, f.severity, f.message, seqs, f.detected_ns, now_ns,
                f.agent])
    return True


def prune_scans(index: RunIndex, *, scanned_before_ns: int) -> int:
    """Forget scan marks older than ``scanned_before_ns`` (an idle run may then be scanned once more)."""
    with index.transaction() as db:
        return int(db.execute("DELETE FROM finding_scans WHERE scanned_ns < ?", [scanned_before_ns]).rowcount)


# -- reading findings ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FindingFilters:
    """Filters of the findings list; every field is optional."""

    kind: str | None = None
    run_id: str | None = None
    severity: str | None = None
    detected_after_ns: int | None = None
    detected_before_ns: int | None = None


def list_findings(index: RunIndex, tenant_id: str, filters: FindingFilters, *, limit: int,
                  cursor: str | None = None) -> tuple[list[StoredFinding], str | None]:
    """A page of findings, newest first, and the next page's cursor (keyset over detected_ns, id)."""
    where: list[str] = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
    for column, value in (("kind", filters.kind), ("run_id", filters.run_id), ("severity", filters.severity)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if filters.detected_after_ns is not None:
        where.append("detected_ns >= ?")
        params.append(filters.detected_after_ns)
    if filters.detected_before_ns is not None:
        where.append("detected_ns < ?")
        params.append(filters.detected_before_ns)
    if cursor:
        where.append("(detected_ns, finding_id) < (?, ?)")
        params.extend(_cursor.decode_ns_key(cursor))
    rows = index.query(f"SELECT * FROM findings WHERE {' AND '.join(where)} "
                       "ORDER BY detected_ns DESC, finding_id DESC LIMIT ?", [*params, limit + 1])
    page = [_finding(r) for r in rows[:limit]]
    more = len(rows) > limit
    return page, _cursor.encode_cursor(page[-1].detected_ns, page[-1].finding_id) if more else None


def run_findings(index: RunIndex, tenant_id: str, run_id: str) -> list[StoredFinding]:
    """Every finding of one run, in step order."""
    rows = index.query("SELECT * FROM findings WHERE tenant_id = ? AND run_id = ?", [tenant_id, run_id])
    return sorted((_finding(r) for r in rows), key=lambda f: (f.step_seqs[:1] or (-1,), f.kind))


def _finding(row: dict[str, Any]) -> StoredFinding:
    return StoredFinding(row["finding_id"], row["run_id"], row["kind"], row["severity"], row["message"],
                         tuple(orjson.loads(row["step_seqs"])), row["detected_ns"], row["agent"])


def finding_to_dict(f: StoredFinding) -> dict[str, Any]:
    """A finding as plain JSON-ready data."""
    return {"finding_id": f.finding_id, "run_id": f.run_id, "kind": f.kind, "severity": f.severity,
            "message": f.message, "step_seqs": list(f.step_seqs), "detected_ns": f.detected_ns, "agent": f.agent}


# -- feedback --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Feedback:
    """A score, label and/or comment on a run."""

    feedback_id: str
    run_id: str
    score: float | None
    label: str | None
    comment: str | None
    created_ns: int
    created_by: str


def add_feedback(index: RunIndex, tenant_id: str, run_id: str, *, score: float | None, label: str | None,
                 comment: str | None, actor: str) -> Feedback:
    """Store feedback on a run (the caller checked that the run exists) and log ``feedback.added``."""
    item = Feedback(secrets.token_hex(16), run_id, score, label, comment, time.time_ns(), actor)
    with index.transaction() as db:
        db.execute("INSERT INTO feedback (feedback_id, tenant_id, run_id, score, label, comment, created_ns, "
                   "created_by) VALUES (?,?,?,?,?,?,?,?)",
                   [item.feedback_id, tenant_id, run_id, score, label, comment, item.created_ns, actor])
        append_event(db, tenant_id, "feedback.added", run_id=run_id, ts_ns=item.created_ns,
                     data={"feedback_id": item.feedback_id, "run_id": run_id, "score": score, "label": label})
    return item


def list_feedback(index: RunIndex, tenant_id: str, *, run_id: str | None = None, label: str | None = None,
                  limit: int, cursor: str | None = None) -> tuple[list[Feedback], str | None]:
    """A page of feedback, newest first, and the next page's cursor."""
    where: list[str] = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
    for column, value in (("run_id", run_id), ("label", label)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if cursor:
        where.append("(created_ns, feedback_id) < (?, ?)")
        params.extend(_cursor.decode_ns_key(cursor))
    rows = index.query(f"SELECT * FROM feedback WHERE {' AND '.join(where)} "
                       "ORDER BY created_ns DESC, feedback_id DESC LIMIT ?", [*params, limit + 1])
    page = [Feedback(r["feedback_id"], r["run_id"], r["score"], r["label"], r["comment"], r["created_ns"],
                     r["created_by"]) for r in rows[:limit]]
    more = len(rows) > limit
    return page, _cursor.encode_cursor(page[-1].created_ns, page[-1].feedback_id) if more else None


def feedback_summary(index: RunIndex, tenant_id: str, *, started_after_ns: int | None,
                     started_before_ns: int | None, agent: str | None = None) -> dict[str, Any]:
    """Feedback on the runs started in a range: count, mean score and count per label."""
    where: list[str] = ["f.tenant_id = ?"]
    params: list[Any] = [tenant_id]
    for clause, value in (("r.started_ns >= ?", started_after_ns), ("r.started_ns < ?", started_before_ns),
                          ("r.agent = ?", agent)):
        if value is not None:
            where.append(clause)
            params.append(value)
    rows = index.query(
        "SELECT f.label AS label, count(*) AS n, count(f.score) AS scored, avg(f.score) AS mean FROM feedback f "
        f"JOIN runs r ON r.tenant_id = f.tenant_id AND r.run_id = f.run_id WHERE {' AND '.join(where)} "
        "GROUP BY f.label", params)
    count, scored = sum(r["n"] for r in rows), sum(r["scored"] for r in rows)
    total = sum((r["mean"] or 0) * r["scored"] for r in rows)
    return {"count": count, "scored": scored, "mean_score": total / scored if scored else None,
            "labels": {r["label"]: r["n"] for r in rows if r["label"] is not None}}
