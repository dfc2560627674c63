"""The retention job: applies each tenant's plan, on a schedule (a thread) and on demand.

A tenant's runs and steps are kept ``retention_days`` (its own plan from ``tenant_plans``, else
TRACEWARD_RETENTION_DAYS, 30 by default) after their last activity, then hard-deleted from both
stores with a tombstone per run in the audit log (``otlp_receiver/store/retention.py``). The audit
log has its own, longer retention (TRACEWARD_AUDIT_RETENTION_DAYS, 365 by default) that tenants
cannot shorten. Each pass leaves a ``retention.run`` audit row; deleting all of a tenant's data on
request leaves ``tenant_data.delete``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from otlp_receiver.progress import Progress
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.retention import (
    NS_PER_DAY,
    RetentionPlans,
    all_run_ids,
    delete_runs,
    expired_run_ids,
    known_tenants,
    prune_audit,
)
from otlp_receiver.store.steps import StepTable

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "system:retention"
_MAX_CHUNKS = 10_000  # a bound on one pass, far above any real backlog


class RetentionJob:
    """Deletes expired runs and audit rows per tenant; serialised, so on-demand and scheduled passes never overlap."""

    def __init__(self, index: RunIndex, steps: StepTable, audit: AuditLog, *, default_days: int, audit_days: int,
                 interval_s: float, drain: Callable[[], object] | None = None,
                 forget: Callable[[str, Sequence[str]], None] | None = None,
                 progress: Progress | None = None) -> None:
        self.index, self.steps, self.audit = index, steps, audit
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
        with self._lock:
            runs, steps = self._delete_all(tenant_id, lambda: expired_run_ids(self.index, tenant_id, cutoff),
                                           actor=actor, reason="retention")
            pruned = prune_audit(self.index, self.audit, tenant_id, now - self.audit_days * NS_PER_DAY, actor=actor)
            summary = {"tenant_id": tenant_id, "trigger": trigger, "retention_days": days, "cutoff_ns": cutoff,
                       "runs_deleted": runs, "steps_deleted": steps, "audit_rows_pruned": pruned}
            self.audit.append(tenant_id, actor=actor, action="retention.run", details=summary)
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
        with self._lock:
            runs, steps = self._delete_all(tenant_id, lambda: all_run_ids(self.index, tenant_id), actor=actor,
                                           reason="tenant_data_request")
            summary = {"tenant_id": tenant_id, "runs_deleted": runs, "steps_deleted": steps}
            self.audit.append(tenant_id, actor=actor, action="tenant_data.delete", details=summary)
        return summary

    def _delete_all(self, tenant_id: str, next_ids: Callable[[], list[str]], *, actor: str,
                    reason: str) -> tuple[int, int]:
        runs = steps = 0
        for _ in range(_MAX_CHUNKS):
            run_ids = next_ids()
            if not run_ids:
                break
            with self.progress.busy("retention delete") if self.progress else contextlib.nullcontext():
                deleted = delete_runs(self.index, self.steps, self.audit, tenant_id, run_ids, actor=actor,
                                      reason=reason)
            if self.forget is not None:
                self.forget(tenant_id, run_ids)
            runs, steps = runs + deleted.runs, steps + deleted.steps
            if deleted.runs == 0:
                break  # nothing removable (should not happen): don't spin
        return runs, steps

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
