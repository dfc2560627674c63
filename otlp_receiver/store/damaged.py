"""Damaged step files met by a deletion: which ones may go, and what the operator is told.

A Delta delete rewrites the files of the partitions it touches, so one damaged file (missing, truncated,
overwritten: ``StepTable.remove_damaged``) fails it, and used to fail the tenant's whole retention pass.
When a delete fails, the files of its days are checked, and a damaged file is removed (from the Delta log
and from disk) when the run index shows it cannot hold a step of a run that is kept: no step of a kept run
of that tenant and day has a run id and a start time within the file's statistics. That is exact as far as
the index goes: it has one row per stored step, with the step's run id, day and start_ns. A damaged file
that may hold a kept step is kept: its rows cannot be read, so they cannot be told apart, and deleting it
could destroy steps still within retention that a backup could restore. The expired runs with steps on its
day are held (left in the index, no tombstone) and retried every pass; the file goes once every run that
may have a step in it has expired, or when the tenant's data is deleted.

The operator is told: an error log naming the file (every pass that meets it), a ``retention.damaged_file``
audit row in the tenant's log when a file is first kept and when it is removed, and the kept files in
``damaged_step_files``, which /healthz and /metrics count. A row there goes when its file is removed, or
when a completed pass over its tenant no longer meets it (the file was restored, or nothing expired uses it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import DamagedFile, StepFile

logger = logging.getLogger(__name__)

DAMAGED_ACTION = "retention.damaged_file"
_EXPIRED = "{p}started_ns < ? AND coalesce({p}last_end_ns, 0) < ? AND coalesce({p}finished_ns, 0) < ?"


def expired_condition(prefix: str = "") -> str:
    """SQL: the run (columns of the runs table, with ``prefix``) had no activity since the cutoff (3 params)."""
    return _EXPIRED.format(p=prefix)


def may_hold_kept_steps(index: RunIndex, file: StepFile, cutoff_ns: int | None) -> bool:
    """Whether the file's statistics admit a step of a run kept at ``cutoff_ns`` (None: no run is kept).

    A step whose run is not in the index at all counts as kept: nothing says it may go."""
    if cutoff_ns is None:
        return False
    where = ["s.tenant_id = ?", "s.day = ?"]
    params: list[str | int] = [file.tenant_id, file.day]
    for column, (low, high) in (("run_id", file.run_ids), ("start_ns", file.start_ns)):
        if low is not None:
            where.append(f"s.{column} >= ?")
            params.append(low)
        if high is not None:
            where.append(f"s.{column} <= ?")
            params.append(high)
    rows = index.query(
        f"SELECT 1 FROM spans s LEFT JOIN runs r ON r.tenant_id = s.tenant_id AND r.run_id = s.run_id "
        f"WHERE {' AND '.join(where)} AND (r.run_id IS NULL OR NOT ({expired_condition('r.')})) LIMIT 1",
        [*params, cutoff_ns, cutoff_ns, cutoff_ns])
    return bool(rows)


def report_damaged(index: RunIndex, audit: AuditLog, tenant_id: str, found: Sequence[DamagedFile], *,
                   actor: str) -> None:
    """Log every damaged file; audit the newly kept and the removed ones; keep the kept ones listed."""
    now = time.time_ns()
    with index.transaction() as db:
        for damaged in found:
            file = damaged.file
            known = db.execute("SELECT 1 FROM damaged_step_files WHERE path = ?", [file.path]).fetchone()
            if damaged.removed:
                logger.error("damaged step file %s (tenant %s, day %s): %s; removed from the step table and the "
                             "disk: every step it can hold is past retention", damaged.local_path, tenant_id,
                             file.day, damaged.problem)
                db.execute("DELETE FROM damaged_step_files WHERE path = ?", [file.path])
            else:
                logger.error("damaged step file %s (tenant %s, day %s): %s; kept: it may hold steps still within "
                             "retention. The expired runs of that day stay until it can go (each pass retries); "
                             "restore the file from a backup to let them go now", damaged.local_path, tenant_id,
                             file.day, damaged.problem)
                db.execute("INSERT INTO damaged_step_files (path, tenant_id, day, problem, first_seen_ns, "
                           "last_seen_ns) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET "
                           "problem = excluded.problem, last_seen_ns = excluded.last_seen_ns",
                           [file.path, tenant_id, file.day, damaged.problem, now, now])
            if damaged.removed or not known:
                audit.append(tenant_id, actor=actor, action=DAMAGED_ACTION, target=file.path, db=db,
                             details=_details(damaged))


def _details(damaged: DamagedFile) -> dict[str, Any]:
    return {"day": damaged.file.day, "problem": damaged.problem, "removed": damaged.removed,
            "size_bytes": damaged.file.size}


def forget_unmet(index: RunIndex, tenant_id: str, *, since_ns: int) -> None:
    """After a completed pass over the tenant: drop the listed files it did not meet (since ``since_ns``)."""
    with index.transaction() as db:
        db.execute("DELETE FROM damaged_step_files WHERE tenant_id = ? AND last_seen_ns < ?", [tenant_id, since_ns])


def damaged_count(index: RunIndex) -> int:
    """Damaged step files kept by retention, all tenants (/healthz, /metrics)."""
    return int(index.query("SELECT count(*) AS n FROM damaged_step_files")[0]["n"])
