"""Hard deletion of runs and steps (retention plans, tenant-data requests) and audit-log pruning.

A run is deleted from both stores: first from the Delta table (delete, then vacuum with zero
retention so the Parquet files that held its steps are gone from disk), then from SQLite (runs,
run_models/run_tools/run_tags facets, spans, and every other table keyed by ``(tenant_id, run_id)``
— events, findings, seals scheduling… — found from the schema, so tables added later are covered;
never ``audit_log``) in one transaction that also appends a tombstone
per run to the tenant's audit log: ``retention.tombstone`` with the run id, its final chain head
hash, its step count and the deletion time. Delta goes first on purpose: if the process dies in
between, the run is still listed in SQLite and the next pass deletes it again (both halves are
idempotent); the other order would leave orphan steps that nothing points to.

A damaged step file in a partition the delete touches no longer fails it: the deletion removes the damaged
files that hold nothing it must keep, holds back the runs whose steps may sit in the others, and deletes
the rest (``otlp_receiver/store/damaged.py``).

Known race: steps of a run that the flusher commits *while* the run is being deleted survive
as a new, partial run (new data is never dropped silently). Callers deleting a whole tenant wait
for the write-ahead log to drain first.

Audit pruning removes a tenant's oldest rows (the front of its hash chain) and records the last
pruned row's hash in ``audit_anchors``; :meth:`AuditLog.verify` starts from that anchor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from otlp_receiver.errors import StorageError
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.damaged import expired_condition, may_hold_kept_steps, report_damaged
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import DamagedFile, StepTable

logger = logging.getLogger(__name__)

CHUNK_RUNS = 500
"""Runs deleted per Delta delete + vacuum and per SQLite transaction."""
_RUN_TABLES = ("runs", "run_models", "run_tools", "run_tags", "spans")
NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class DeletedRuns:
    """What one deletion removed."""

    runs: int
    steps: int
    run_ids: tuple[str, ...]
    held: tuple[str, ...] = ()
    """Runs left in place: they may have steps in a damaged file that had to be kept (retried next pass)."""
    blocked_days: frozenset[str] = frozenset()
    """Days of the tenant with such a file: a pass skips the runs with steps on them (``skip_days``)."""
    damaged: tuple[DamagedFile, ...] = ()


class RetentionPlans:
    """Per-tenant retention plans (the tenant_plans table); tenants without one use the default."""

    def __init__(self, index: RunIndex) -> None:
        self.index = index

    def get(self, tenant_id: str) -> int | None:
        """The tenant's run/step retention in days, or None when it uses the server default."""
        rows = self.index.query("SELECT retention_days FROM tenant_plans WHERE tenant_id = ?", [tenant_id])
        return int(rows[0]["retention_days"]) if rows else None

    def set(self, tenant_id: str, retention_days: int | None, *, actor: str, db: Database) -> None:
        """Set (or with None, clear) the tenant's plan inside the caller's transaction."""
        if retention_days is None:
            db.execute("DELETE FROM tenant_plans WHERE tenant_id = ?", [tenant_id])
            return
        db.execute("INSERT OR REPLACE INTO tenant_plans (tenant_id, retention_days, updated_ns, updated_by) "
                   "VALUES (?, ?, ?, ?)", [tenant_id, retention_days, time.time_ns(), actor])


def known_tenants(index: RunIndex) -> list[str]:
    """Every tenant that has runs, keys, a plan or audit rows."""
    rows = index.query("SELECT tenant_id FROM runs UNION SELECT tenant_id FROM api_keys "
                       "UNION SELECT tenant_id FROM tenant_plans UNION SELECT tenant_id FROM audit_log")
    return sorted(r["tenant_id"] for r in rows)


def expired_run_ids(index: RunIndex, tenant_id: str, cutoff_ns: int, *, limit: int = CHUNK_RUNS,
                    skip_days: Sequence[str] = ()) -> list[str]:
    """Runs of the tenant whose last activity (start, last step end, finish) is before ``cutoff_ns``, but for
    those with steps on ``skip_days``."""
    skip, skip_params = _skip_days(skip_days)
    rows = index.query(
        f"SELECT run_id FROM runs WHERE tenant_id = ? AND {expired_condition()}{skip} "
        "ORDER BY started_ns, run_id LIMIT ?",
        [tenant_id, cutoff_ns, cutoff_ns, cutoff_ns, *skip_params, limit])
    return [r["run_id"] for r in rows]


def all_run_ids(index: RunIndex, tenant_id: str, *, limit: int = CHUNK_RUNS,
                skip_days: Sequence[str] = ()) -> list[str]:
    """Any ``limit`` runs of the tenant (for deleting all its data), but for those with steps on ``skip_days``."""
    skip, skip_params = _skip_days(skip_days)
    rows = index.query(f"SELECT run_id FROM runs WHERE tenant_id = ?{skip} LIMIT ?", [tenant_id, *skip_params, limit])
    return [r["run_id"] for r in rows]


def _skip_days(days: Sequence[str]) -> tuple[str, list[str]]:
    if not days:
        return "", []
    return (f" AND NOT EXISTS (SELECT 1 FROM spans s WHERE s.tenant_id = runs.tenant_id AND s.run_id = runs.run_id "
            f"AND s.day IN ({','.join('?' * len(days))}))", list(days))


def delete_runs(index: RunIndex, steps: StepTable, audit: AuditLog, tenant_id: str, run_ids: Sequence[str], *,
                actor: str, reason: str, cutoff_ns: int | None) -> DeletedRuns:
    """Hard-delete these runs of the tenant from Delta and SQLite, leaving one tombstone per run.

    ``cutoff_ns`` says which runs the caller keeps (those active since; None: none, the tenant's data goes):
    a damaged step file that may hold their steps stays, and the given runs with steps on its day are held.
    """
    if not run_ids:
        return DeletedRuns(0, 0, ())
    damaged, held = _delete_steps(index, steps, audit, tenant_id, run_ids, actor=actor, cutoff_ns=cutoff_ns)
    kept = set(held)
    gone = _delete_rows(index, audit, tenant_id, [r for r in run_ids if r not in kept], reason=reason, actor=actor)
    blocked = frozenset(d.file.day for d in damaged if not d.removed)
    return DeletedRuns(gone.runs, gone.steps, gone.run_ids, tuple(held), blocked, tuple(damaged))


def _delete_steps(index: RunIndex, steps: StepTable, audit: AuditLog, tenant_id: str, run_ids: Sequence[str], *,
                  actor: str, cutoff_ns: int | None) -> tuple[list[DamagedFile], list[str]]:
    """Delete the runs' steps from Delta; past damaged files if need be. Returns them and the held runs.

    After a failed delete, the files of its days are checked cheaply (size, footer), then, if that finds
    nothing or the delete fails again, each alone with the delete that failed (``replay``).

    Raises:
        StorageError: the delete failed and no damaged file explains it, or failed again without them.
    """
    days = _days_of(index, tenant_id, run_ids)
    if not days:
        return [], []
    predicate = step_predicate(tenant_id, days, run_ids)
    try:
        steps.delete(predicate)
        return [], []
    except StorageError as exc:
        logger.warning("deleting the steps of %d runs of tenant %s failed (%s); checking the files of their %d "
                       "days for damage", len(run_ids), tenant_id, exc, len(days))
        failure = exc
    damaged: list[DamagedFile] = []
    held: list[str] = []
    for replay in (None, predicate):
        seen = {d.file.path for d in damaged}
        found = [d for d in steps.remove_damaged(
            tenant_id, days, replay=replay, removable=lambda f: not may_hold_kept_steps(index, f, cutoff_ns))
            if d.file.path not in seen]
        if not found:
            continue
        report_damaged(index, audit, tenant_id, found, actor=actor)
        damaged.extend(found)
        held = _runs_on_days(index, tenant_id, run_ids, sorted({d.file.day for d in damaged if not d.removed}))
        rest = [r for r in run_ids if r not in set(held)]
        rest_days = _days_of(index, tenant_id, rest)  # none of them blocked: a held run is one with steps there
        try:
            if rest_days:
                predicate = step_predicate(tenant_id, rest_days, rest)
                steps.delete(predicate)
            return damaged, held
        except StorageError as exc:
            failure = exc
    raise failure


def held_run_count(index: RunIndex, tenant_id: str, cutoff_ns: int | None, days: Sequence[str]) -> int:
    """Runs a pass would delete (inactive since ``cutoff_ns``; None: all) that have steps on ``days``."""
    if not days:
        return 0
    expired, params = (f" AND {expired_condition('r.')}", [cutoff_ns] * 3) if cutoff_ns is not None else ("", [])
    rows = index.query(
        f"SELECT count(*) AS n FROM runs r WHERE r.tenant_id = ?{expired} AND EXISTS (SELECT 1 FROM spans s "
        f"WHERE s.tenant_id = r.tenant_id AND s.run_id = r.run_id AND s.day IN ({','.join('?' * len(days))}))",
        [tenant_id, *params, *days])
    return int(rows[0]["n"])


def _days_of(index: RunIndex, tenant_id: str, run_ids: Sequence[str]) -> list[str]:
    if not run_ids:
        return []
    marks = ",".join("?" * len(run_ids))
    return [r["day"] for r in index.query(
        f"SELECT DISTINCT day FROM spans WHERE tenant_id = ? AND run_id IN ({marks}) ORDER BY day",
        [tenant_id, *run_ids])]


def _runs_on_days(index: RunIndex, tenant_id: str, run_ids: Sequence[str], days: Sequence[str]) -> list[str]:
    if not run_ids or not days:
        return []
    rows = index.query(
        f"SELECT DISTINCT run_id FROM spans WHERE tenant_id = ? AND run_id IN ({','.join('?' * len(run_ids))}) "
        f"AND day IN ({','.join('?' * len(days))}) ORDER BY run_id", [tenant_id, *run_ids, *days])
    return [r["run_id"] for r in rows]


def _delete_rows(index: RunIndex, audit: AuditLog, tenant_id: str, run_ids: Sequence[str], *, reason: str,
                 actor: str) -> DeletedRuns:
    """The SQLite half: every run-keyed row, and a tombstone per run, in one transaction."""
    if not run_ids:
        return DeletedRuns(0, 0, ())
    marks = ",".join("?" * len(run_ids))
    with index.transaction() as db:
        gone = list(db.query(f"SELECT run_id, project_id, head_hash, step_count FROM runs "
                             f"WHERE tenant_id = ? AND run_id IN ({marks}) ORDER BY run_id", [tenant_id, *run_ids]))
        step_total = list(db.query(f"SELECT count(*) AS n FROM spans WHERE tenant_id = ? AND run_id IN ({marks})",
                                   [tenant_id, *run_ids]))[0]["n"]
        for table in run_keyed_tables(db):
            db.execute(f"DELETE FROM {table} WHERE tenant_id = ? AND run_id IN ({marks})", [tenant_id, *run_ids])
        for table in TRACE_KEYED_TABLES:  # a run's id is its trace id
            db.execute(f"DELETE FROM {table} WHERE tenant_id = ? AND trace_id IN ({marks})", [tenant_id, *run_ids])
        deleted_at = time.time_ns()
        for run in gone:
            audit.append(tenant_id, actor=actor, action="retention.tombstone", target=run["run_id"],
                         details=_tombstone(run, deleted_at, reason), db=db)
    logger.info("deleted %d runs (%d steps) of tenant %s: %s", len(gone), step_total, tenant_id, reason)
    return DeletedRuns(len(gone), int(step_total), tuple(r["run_id"] for r in gone))


TRACE_KEYED_TABLES = ("approvals",)
"""Run data keyed by trace id: approval requests hold the tool arguments and the context an agent sent.
(Token uses and binding checks are kept until every token they could replay has expired; see
``governance.store.prune_binding_state``.)"""


def run_keyed_tables(db: Database) -> list[str]:
    """The core run tables, then every other table with ``tenant_id`` and ``run_id`` columns (never the audit log)."""
    found = list(_RUN_TABLES)
    for row in db.query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        name = row["name"]
        if name in found or name == "audit_log" or name.startswith("sqlite_"):
            continue
        columns = {c["name"] for c in db.query(f"PRAGMA table_info({name})")}
        if {"tenant_id", "run_id"} <= columns:
            found.append(name)
    return found


def _tombstone(run: dict[str, Any], deleted_at: int, reason: str) -> dict[str, Any]:
    return {"run_id": run["run_id"], "project_id": run["project_id"], "head_hash": run["head_hash"] or None,
            "step_count": run["step_count"], "deleted_at_ns": deleted_at, "reason": reason}


def step_predicate(tenant_id: str, days: Sequence[str], run_ids: Sequence[str]) -> str:
    """The Delta delete predicate for some runs of a tenant (partition columns first, so files are pruned)."""
    return (f"tenant_id = {_sql_str(tenant_id)} AND day IN ({', '.join(_sql_str(d) for d in days)}) "
            f"AND run_id IN ({', '.join(_sql_str(r) for r in run_ids)})")


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def prune_audit(index: RunIndex, audit: AuditLog, tenant_id: str, before_ns: int, *, actor: str) -> int:
    """Delete the tenant's audit rows older than ``before_ns`` from the front of its chain.

    The last pruned row's hash becomes the chain's anchor, and an ``audit.pruned`` row records the
    pruning itself. Returns the number of rows removed.
    """
    with index.transaction() as db:
        last = list(db.query("SELECT id, row_hash FROM audit_log WHERE tenant_id = ? AND ts_ns < ? "
                             "ORDER BY id DESC LIMIT 1", [tenant_id, before_ns]))
        if not last:
            return 0
        last_id, last_hash = last[0]["id"], last[0]["row_hash"]
        count = db.execute("DELETE FROM audit_log WHERE tenant_id = ? AND id <= ?", [tenant_id, last_id]).rowcount
        db.execute("INSERT OR REPLACE INTO audit_anchors (tenant_id, last_id, last_hash, pruned_ns) "
                   "VALUES (?, ?, ?, ?)", [tenant_id, last_id, last_hash, time.time_ns()])
        audit.append(tenant_id, actor=actor, action="audit.pruned", target=None,
                     details={"rows": count, "before_ns": before_ns, "anchor_id": last_id, "anchor_hash": last_hash},
                     db=db)
    return int(count)
