"""Server-made steps and audit records, appended off the request path in batches.

One WAL append (one fsync) per (tenant, project) per batch, and one SQLite transaction for the audit records
gathered every ``AUDIT_CADENCE_S``: a decision's answer never waits on the WAL or on the single SQLite writer,
which the flusher also holds.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from governance import store
from governance.store import AuditEntry
from otlp_receiver.errors import AppError
from otlp_receiver.model import SpanId, StepDraft, StepType, TraceId
from otlp_receiver.store.index import RunIndex

logger = logging.getLogger(__name__)

RecordSteps = Callable[[str, str, Sequence[StepDraft]], object]
"""(tenant_id, project_id, drafts) → append server-made steps to their runs (``IngestPipeline.ingest_drafts``)."""

AUDIT_CADENCE_S = 0.02
"""How often a lingering StepRecorder writes the audit records it gathered."""


class StepRecorder:
    """Appends server-made steps to runs, and audit records of decisions, in batches on its own thread.

    One WAL append (one fsync) per (tenant, project) and one SQLite transaction for the audit
    records per batch: group commit, off the request path.
    """

    def __init__(self, record: RecordSteps, index: RunIndex, *, linger_s: float = 0.25) -> None:
        self._record = record
        self._index = index
        self._linger_s = linger_s
        self._pending: list[tuple[str, str, StepDraft]] = []
        self._audits: list[tuple[str, AuditEntry]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, tenant_id: str, project_id: str, draft: StepDraft) -> None:
        """Queue one step; it reaches the WAL within milliseconds."""
        with self._lock:
            self._pending.append((tenant_id, project_id, draft))
        self._wake.set()

    def add_audit(self, tenant_id: str, entry: AuditEntry) -> None:
        """Queue one audit record."""
        with self._lock:
            self._audits.append((tenant_id, entry))
        self._wake.set()

    def flush(self) -> None:
        """Append everything queued so far (waits for a flush already under way)."""
        if not self._pending and not self._audits and not self._flush_lock.locked():
            return
        with self._flush_lock:
            self.flush_audits()
            with self._lock:
                batch, self._pending = self._pending, []
            groups: dict[tuple[str, str], list[StepDraft]] = {}
            for tenant_id, project_id, draft in batch:
                groups.setdefault((tenant_id, project_id), []).append(draft)
            for (tenant_id, project_id), drafts in groups.items():
                try:
                    self._record(tenant_id, project_id, drafts)
                except AppError as exc:  # storage full or failing: keep the steps and retry
                    logger.warning("could not record %d governance steps (%s); retrying", len(drafts), exc.code)
                    with self._lock:
                        self._pending[:0] = [(tenant_id, project_id, d) for d in drafts]

    def flush_audits(self) -> None:
        """Append the queued audit records now (one transaction)."""
        with self._lock:
            audits, self._audits = self._audits, []
        if not audits:
            return
        try:
            store.append_audits(self._index, audits)
        except AppError as exc:
            logger.warning("could not append %d audit records (%s); retrying", len(audits), exc.code)
            with self._lock:
                self._audits[:0] = audits

    def start(self) -> None:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._run, name="governance-steps", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after a last flush."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._wake.wait(1.0):
                continue
            try:
                self._linger()
                self.flush()
            except Exception:  # a background loop: log and keep going
                logger.exception("governance step recorder failed")
                time.sleep(0.5)

    def _linger(self) -> None:
        """Gather steps for ``linger_s`` (each WAL append wakes the flusher, whose round, a Delta commit,
        costs the same for 1 step as for 100; the receiver flushes us itself before it sequences spans),
        writing the audit records gathered every ``AUDIT_CADENCE_S``: the audit log trails the answers by
        tens of milliseconds, and a busy server pays one SQLite transaction per cadence, not per decision
        (nor a thread wake-up per decision: this loop sleeps on a timer, not on ``_wake``)."""
        deadline = time.monotonic() + self._linger_s
        while (remaining := deadline - time.monotonic()) > 0:
            self.flush_audits()
            if self._stop.wait(min(remaining, AUDIT_CADENCE_S)):
                break
        self._wake.clear()


def server_step(trace_id: str, span_id: str, parent: str | None, step_type: StepType, name: str, ts_ns: int,
                payload: Mapping[str, Any], *, status: str = "ok", tool: str | None = None, agent: str | None = None,
                error: tuple[str, str] | None = None) -> StepDraft:
    """A step the server makes (decision, approval, binding outcome): instantaneous, None values left out."""
    return StepDraft(trace_id=TraceId(trace_id), span_id=SpanId(span_id),
                     parent_span_id=SpanId(parent) if parent else None, type=step_type, name=name,
                     start_ns=ts_ns, end_ns=ts_ns, status=status, tool_name=tool, agent_name=agent,
                     error_type=error[0] if error else None, error_message=error[1] if error else None,
                     payload={k: v for k, v in payload.items() if v is not None})


def derived_span_id(*parts: str) -> str:
    """A stable span id for a server-made step, so re-recording it is deduplicated by the receiver."""
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]
