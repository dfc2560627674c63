"""The retention job: applies each tenant's plan, on a schedule (a thread) and on demand.

A tenant's runs and steps are kept ``retention_days`` (its own plan from ``tenant_plans``, else
TRACEWARD_RETENTION_DAYS, 30 by default) after their last activity, then hard-deleted from both
stores with a tombstone per run in the audit log (``otlp_receiver/store/retention.py``). The audit
log has its own, longer retention (TRACEWARD_AUDIT_RETENTION_DAYS, 365 by default) that tenants
cannot shorten. Each pass leaves a ``retention.run`` audit row; deleting all of a tenant's data on
request leaves ``tenant_data.delete``.

A damaged step file never stops a pass: what only expired runs use is removed, a file that may hold steps
still within retention is kept and the expired runs on its day are held, and the pass goes on with the rest
of the tenant (``otlp_receiver/store/damaged.py``). Both show in the summary (``runs_held``,
``damaged_files_removed``, ``damaged_files_kept``). Any other step-table failure still fails the tenant's pass
(logged, retried next pass), after its audit log has been pruned and the failure recorded in ``retention.run``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from otlp_receiver.errors import StorageError
from otlp_receiver.progress import Progress
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.damaged import forget_unmet
from otlp_receiver.store.gate import StoreGate
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.retention import (
    NS_PER_DAY,
    DeletedRuns,
    RetentionPlans,
    all_run_ids,
    delete_runs,
    expired_run_ids,
    held_run_count,
    known_tenants,
    prune_audit,
)
from otlp_receiver.store.steps import StepTable

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:retention"
_MAX_CHUNKS = 10_000  # a bound on one pass, far above any real backlog


@dataclass(slots=True)
class PassTotals:
    """What one pass over a tenant deleted, held back and met, chunk by chunk."""

    runs: int = 0
    steps: int = 0
    held: int = 0
    """Runs the pass would have deleted but for a kept damaged file on a day they have steps on."""
    blocked_days: set[str] = field(default_factory=set)
    removed_files: set[str] = field(default_factory=set)
    kept_files: set[str] = field(default_factory=set)

    def add(self, deleted: DeletedRuns) -> None:
        """Count one chunk: what it deleted, the damaged files it removed, and the kept ones, whose days the
        pass skips from now on."""
        self.runs, self.steps = self.runs + deleted.runs, self.steps + deleted.steps
        self.blocked_days.update(deleted.blocked_days)
        for damaged in deleted.damaged:
            (self.removed_files if damaged.removed else self.kept_files).add(damaged.file.path)

    def counts(self) -> dict[str, int]:
        """The summary's figures."""
        return {"runs_deleted": self.runs, "steps_deleted": self.steps, "runs_held": self.held,
                "damaged_files_removed": len(self.removed_files), "damaged_files_kept": len(self.kept_files)}


class RetentionJob:
    """Deletes expired runs and audit rows per tenant; serialised, so on-demand and scheduled passes never overlap."""

    def __init__(self, index: RunIndex, steps: StepTable, audit: AuditLog, *, default_days: int, audit_days: int,
                 interval_s: float, drain: Callable[[], object] | None = None,
                 forget: Callable[[str, Sequence[str]], None] | None = None,
                 progress: Progress | None = None, gate: StoreGate | None = None) -> None:
        self.index, self.steps, self.audit = index, steps, audit
        self.gate = gate
        """The flusher's, where it runs beside the flusher: each chunk is a turn of it that removes data files, so a
        backup never sees a chunk half-applied (steps gone, runs still indexed) nor loses files it is copying."""
        self.forget = forget
        self.progress = progress
        """The flusher's, where it runs beside the flusher: a chunk's Delta delete and vacuum hold the step table,
        so the flusher waits for them; the watchdog must see that as progress, not as a stall."""
        self.plans = RetentionPlans(index)
        self.default_days, self.audit_days, self.interval_s = default_days, audit_days, interval_s
        self.drain = drain
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def plan(self, tenant_id: str) -> dict[str, Any]:
        """The tenant's effective plan."""
        own = self.plans.get(tenant_id)
        return {"retention_days": own if own is not None else self.default_days,
                "source": "tenant" if own is not None else "default", "default_retention_days": self.default_days,
                "audit_retention_days": self.audit_days}

    def run_tenant(self, tenant_id: str, *, actor: str = SYSTEM_ACTOR, trigger: str = "schedule",
                   now_ns: int | None = None) -> dict[str, Any]:
        """One retention pass over one tenant; returns (and audits) what it deleted."""
        now = time.time_ns() if now_ns is None else now_ns
        days = self.plan(tenant_id)["retention_days"]
        cutoff = now - days * NS_PER_DAY
        totals = PassTotals()
        failure: StorageError | None = None
        with self._lock:
            try:
                self._delete_all(tenant_id, cutoff, totals, actor=actor, reason="retention")
            except StorageError as exc:  # the audit log's own retention must not wait for the step table
                failure = exc
            pruned = prune_audit(self.index, self.audit, tenant_id, now - self.audit_days * NS_PER_DAY, actor=actor)
            summary = {"tenant_id": tenant_id, "trigger": trigger, "retention_days": days, "cutoff_ns": cutoff,
                       **totals.counts(), "audit_rows_pruned": pruned}
            self.audit.append(tenant_id, actor=actor, action="retention.run",
                              details={**summary, "error": str(failure)} if failure else summary)
        if failure is not None:
            raise failure
        return summary

    def run_all(self, *, actor: str = SYSTEM_ACTOR, trigger: str = "schedule") -> list[dict[str, Any]]:
        """A pass over every known tenant (a failing tenant is logged and skipped)."""
        summaries = []
        for tenant_id in known_tenants(self.index):
            try:
                summaries.append(self.run_tenant(tenant_id, actor=actor, trigger=trigger))
            except Exception:  # background boundary: one tenant's failure must not stop the others
                logger.exception("retention failed for tenant %s", tenant_id)
        return summaries

    def delete_tenant_data(self, tenant_id: str, *, actor: str) -> dict[str, Any]:
        """Hard-delete every run and step of the tenant (keys, plan and audit log stay); audited."""
        if self.drain is not None:
            self.drain()  # what is still in the write-ahead log would otherwise come back after the deletion
        totals = PassTotals()
        with self._lock:
            self._delete_all(tenant_id, None, totals, actor=actor, reason="tenant_data_request")
            summary = {"tenant_id": tenant_id, **totals.counts()}
            self.audit.append(tenant_id, actor=actor, action="tenant_data.delete", details=summary)
        return summary

    def _delete_all(self, tenant_id: str, cutoff_ns: int | None, totals: PassTotals, *, actor: str,
                    reason: str) -> None:
        """Delete, chunk by chunk, the tenant's runs inactive since ``cutoff_ns`` (None: all) into ``totals``.

        Runs with steps on a day a kept damaged file blocks are skipped for the rest of the pass. A completed
        pass forgets the listed damaged files of the tenant it did not meet (restored, or no longer in the way).
        """
        started_ns = time.time_ns()
        for _ in range(_MAX_CHUNKS):
            skip = sorted(totals.blocked_days)
            run_ids = (all_run_ids(self.index, tenant_id, skip_days=skip) if cutoff_ns is None
                       else expired_run_ids(self.index, tenant_id, cutoff_ns, skip_days=skip))
            if not run_ids:
                break
            with self.gate.removing_turn() if self.gate else contextlib.nullcontext(), self._busy():
                deleted = delete_runs(self.index, self.steps, self.audit, tenant_id, run_ids, actor=actor,
                                      reason=reason, cutoff_ns=cutoff_ns)
            if self.forget is not None and deleted.run_ids:
                self.forget(tenant_id, deleted.run_ids)  # never a held run: it is still there, and may grow
            new_blocks = not deleted.blocked_days <= totals.blocked_days
            totals.add(deleted)
            if deleted.runs == 0 and not new_blocks:
                break  # nothing removable and nothing newly skipped (should not happen): don't spin
        totals.held = held_run_count(self.index, tenant_id, cutoff_ns, sorted(totals.blocked_days))
        forget_unmet(self.index, tenant_id, since_ns=started_ns)

    def _busy(self) -> contextlib.AbstractContextManager[object]:
        """Step-table work the flusher waits for: progress for the watchdog, not a stall."""
        return self.progress.busy("retention delete") if self.progress else contextlib.nullcontext()

    # -- schedule --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Run a pass every ``interval_s`` seconds in a daemon thread (0 = never: on demand only)."""
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="traceward-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the schedule (a pass in progress finishes its current chunk)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_all()
            except Exception:  # background boundary: log and try again next interval
                logger.exception("retention pass failed")
