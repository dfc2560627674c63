"""Approvals in the running server: read, long-poll, approve (issuing the token once), deny and expire.

Each change goes through ``governance.store.update_approval`` (the transition and its audit record in one
transaction), then an ``approval`` step is queued for the run and the long-poll waiters are woken. The pure
state machine is ``governance.approvals``. Imports the governance core and store, ``otlp_receiver`` (errors,
model, run index) and the server's auth, signing, policy-state, checks and step-recorder modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Mapping
from typing import Any

from governance import store
from governance.approvals import Approval, approve, deny, expire, is_overdue
from governance.store import ApprovalRecord, AuditEntry
from otlp_receiver.errors import ConflictError, NotFoundError
from otlp_receiver.model import StepDraft, StepType
from otlp_receiver.store.index import RunIndex
from server.auth import Principal
from server.governance_checks import args_digest, check_reason
from server.policy_state import PolicyState
from server.signing import TokenIssuer
from server.step_recorder import StepRecorder, derived_span_id, server_step

SYSTEM_ACTOR = "traceward.system"


class ApprovalWaiters:
    """Wakes ``GET /v1/approvals/{id}?wait=N`` handlers (asyncio) when a thread decides an approval."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def register(self, approval_id: str) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        """A waiter for the calling event loop (call from a coroutine)."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(approval_id, set()).add(waiter)
        return waiter

    def unregister(self, approval_id: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        """Forget a waiter."""
        with self._lock:
            waiters = self._waiters.get(approval_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[approval_id]

    def notify(self, approval_id: str) -> None:
        """Wake every waiter of an approval (thread-safe)."""
        with self._lock:
            waiters = list(self._waiters.get(approval_id, ()))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # the loop closed while we were deciding
                loop.call_soon_threadsafe(event.set)


class Approvals:
    """The approvals of every tenant: visibility, long polls, decisions by people and expiry by the job."""

    def __init__(self, index: RunIndex, policies: PolicyState, issuer: TokenIssuer,
                 recorder: StepRecorder) -> None:
        self.index, self.policies, self.issuer, self.recorder = index, policies, issuer, recorder
        self.waiters = ApprovalWaiters()

    def get_approval(self, principal: Principal, approval_id: str) -> ApprovalRecord:
        """One approval the principal may see (expired first if overdue).

        People (``read``) see their whole tenant; an ingest key (``decide``) sees only its own project's,
        so an agent can long-poll the approvals it asked for. Anything else is not found.
        """
        record = store.get_approval(self.index, principal.tenant_id, approval_id)
        if record is None or not _visible(principal, record.approval):
            raise NotFoundError(f"approval {approval_id} not found")
        if is_overdue(record.approval, time.time_ns()):
            return self._expire(record.approval.tenant, approval_id) or self.get_approval(principal, approval_id)
        return record

    async def wait_for_approval(self, principal: Principal, approval_id: str, wait_s: float) -> ApprovalRecord:
        """The approval once decided, or as it is after ``wait_s`` seconds (no thread held while waiting)."""
        deadline = time.monotonic() + wait_s
        waiter = self.waiters.register(approval_id)
        try:
            while True:
                record = await asyncio.to_thread(self.get_approval, principal, approval_id)
                remaining = deadline - time.monotonic()
                if record.approval.status != "pending" or remaining <= 0:
                    return record
                until_expiry = (record.approval.expires_ns - time.time_ns()) / 1e9 + 0.01
                # Re-read at least every 5 s: another process (or a missed wake-up) may have decided it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter[1].wait(), timeout=max(0.0, min(remaining, until_expiry, 5.0)))
                waiter[1].clear()
        finally:
            self.waiters.unregister(approval_id, waiter)

    def list_approvals(self, principal: Principal, filters: store.ApprovalFilters, *, limit: int,
                       cursor: str | None) -> tuple[list[ApprovalRecord], str | None]:
        """A page of the tenant's approvals (overdue ones are shown as expired)."""
        records, next_cursor = store.list_approvals(self.index, principal.tenant_id, filters, limit=limit,
                                                    cursor=cursor)
        now = time.time_ns()
        return [_as_of(r, now) for r in records], next_cursor

    def approve(self, principal: Principal, approval_id: str, *, edited_args: Mapping[str, Any] | None,
                reason: str | None) -> ApprovalRecord:
        """Approve (optionally with edited args that must still pass the policy) and issue the token once."""
        if edited_args is not None:
            args_digest(edited_args, field="args")
        check_reason(reason)
        self.get_approval(principal, approval_id)  # 404 for others; expires it if overdue
        now_ns = time.time_ns()

        def transition(current: ApprovalRecord) -> ApprovalRecord:
            a = current.approval
            if self.policies.kill_switch_blocks(a.tenant, a.project, a.tool, a.action_class):
                raise ConflictError("the kill switch is on for this tool: it can only be denied",
                                    details={"kill_switch": "on"})
            active = self.policies.active_policy(a.tenant, a.project)
            done = approve(a, approver=principal.actor, now_ns=now_ns, edited_args=edited_args,
                           policy=active.policy if active else None, reason=reason)
            token_id, token, _ = self.issuer.issue(a.tenant, a.project, a.tool, args_digest(done.approved_args),
                                                  a.trace_id, a.span_id, now_ns, decision="approved",
                                                  approval_id=a.id, policy_version=a.policy_version)
            return ApprovalRecord(done, token, token_id)

        return self._decide_approval(principal.tenant_id, approval_id, transition, principal.actor,
                                     "approval.approve")

    def deny(self, principal: Principal, approval_id: str, *, reason: str | None) -> ApprovalRecord:
        """Deny; the reason is kept as feedback for the agent."""
        check_reason(reason)
        self.get_approval(principal, approval_id)
        now_ns = time.time_ns()

        def transition(current: ApprovalRecord) -> ApprovalRecord:
            return ApprovalRecord(deny(current.approval, approver=principal.actor, now_ns=now_ns, reason=reason))

        return self._decide_approval(principal.tenant_id, approval_id, transition, principal.actor,
                                     "approval.deny")

    def expire_overdue(self) -> int:
        """Expire every overdue pending approval (the background job); returns how many."""
        overdue = store.overdue_approvals(self.index, time.time_ns())
        return sum(self._expire(tenant, approval_id) is not None for tenant, approval_id in overdue)

    def _expire(self, tenant_id: str, approval_id: str) -> ApprovalRecord | None:
        now_ns = time.time_ns()

        def transition(current: ApprovalRecord) -> ApprovalRecord:
            expired = expire(current.approval, now_ns=now_ns)
            if expired.status != "expired":
                raise ConflictError(f"approval {approval_id} is not overdue")
            return ApprovalRecord(expired)

        try:
            return self._decide_approval(tenant_id, approval_id, transition, SYSTEM_ACTOR, "approval.expire")
        except ConflictError:  # decided or expired by someone else meanwhile
            return None

    def _decide_approval(self, tenant_id: str, approval_id: str, transition: store.Transition, actor: str,
                         action: str) -> ApprovalRecord:
        def audit(record: ApprovalRecord) -> AuditEntry:
            a = record.approval
            return AuditEntry(actor, action, approval_id, {
                "status": a.status, "tool": a.tool, "trace_id": a.trace_id, "reason": a.reason,
                "edited": a.edited_args is not None, "jti": record.token_id,
                "args_sha256": args_digest(a.approved_args) if a.status == "approved" else None})

        record = store.update_approval(self.index, tenant_id, approval_id, transition, audit=audit)
        self.recorder.add(record.approval.tenant, record.approval.project, _approval_step(record))
        self.waiters.notify(approval_id)
        return record


def _visible(principal: Principal, approval: Approval) -> bool:
    return principal.can("read") or approval.project == principal.project_id


def _as_of(record: ApprovalRecord, now_ns: int) -> ApprovalRecord:
    return ApprovalRecord(expire(record.approval, now_ns=now_ns), record.token, record.token_id)


def _approval_step(record: ApprovalRecord) -> StepDraft:
    a = record.approval
    payload = {"approval_id": a.id, "status": a.status, "tool_name": a.tool, "decided_by": a.decided_by,
               "reason": a.reason, "args": dict(a.approved_args), "edited": a.edited_args is not None,
               "jti": record.token_id, "policy_version": a.policy_version, "requested_by": a.requested_by}
    return server_step(a.trace_id, derived_span_id("approval", a.id, a.status), a.span_id, StepType.APPROVAL,
                 f"approval {a.status} {a.tool}", a.decided_ns or time.time_ns(), payload, tool=a.tool,
                 agent=a.agent)
