"""Governance in the running server: decisions, approvals, policies, kill switch, break-glass, binding.

Builds on the pure core (``governance.*``) and its tables (``governance.store``). Holds what only a
long-lived process has: the Ed25519 signing keys (a 0600 PEM file under the data dir), caches of each
project's active policy and each tenant's kill switch (invalidated on change), the waiters of
``GET /v1/approvals/{id}?wait=N``, a background recorder that appends decision/approval/violation steps
to runs, and the job that expires overdue approvals.

Steps are appended off the request path, in batches (one WAL append and fsync per batch, not per
decision), and so are the audit records of allow/deny decisions (one SQLite transaction per batch, within
milliseconds): a decision's answer never waits on the single SQLite writer, which the flusher also holds.
What an answer depends on is written before it: a pending approval (with its audit record) before
``require_approval`` is returned; approvals, policy changes, the kill switch and break-glass are audited in
the same transaction as the change. Before the receiver sequences any span, pending steps are flushed (see
:meth:`Governance.bind`), so a decision always precedes the execution it governs in its run.

The binding check of executed tools (OTLP spans and REST steps) is ``server.binding``; the background
recorder of steps and audit records is ``server.step_recorder``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from governance import store
from governance.approvals import Approval, ApprovalContext, approve, create_approval, deny, expire, is_overdue
from governance.evaluate import Decision, DecisionRequest, evaluate
from governance.policy import EXTERNAL_WRITE, Policy, tool_config
from governance.store import ApprovalRecord, AuditEntry
from governance.tokens import MAX_TTL_S, SigningKeys, issue_token
from otlp_receiver.chain import canonical_json
from otlp_receiver.errors import ConflictError, InvalidInputError, NotFoundError
from otlp_receiver.model import Span as OtelSpan
from otlp_receiver.model import StepDraft, StepType
from otlp_receiver.store.index import RunIndex
from server.auth import Principal
from server.binding import Binder
from server.settings import Settings
from server.step_recorder import RecordSteps, StepRecorder, derived_span_id, server_step

logger = logging.getLogger(__name__)

MAX_ARGS_BYTES = 64 * 1024
MAX_TOOL_NAME_CHARS = 256
MAX_TEXT_CHARS = 4000
SYSTEM_ACTOR = "traceward.system"
_HEX = frozenset("0123456789abcdef")
_MISS: Any = object()



# ---------------------------------------------------------------- signing keys


def load_signing_keys(path: Path) -> SigningKeys:
    """Load the PEM key file, or create it (mode 0600, never overwritten) with a fresh Ed25519 key."""
    try:
        return SigningKeys.from_pem(path.read_bytes())
    except FileNotFoundError:
        pass
    keys = SigningKeys.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return SigningKeys.from_pem(path.read_bytes())
    with os.fdopen(fd, "w") as handle:
        handle.write(keys.to_pem())
        handle.flush()
        os.fsync(handle.fileno())
    logger.info("created decision-token signing key %s in %s", keys.current_kid, path)
    return keys


# ---------------------------------------------------------------- long-poll waiters


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


# ---------------------------------------------------------------- the service


@dataclass(frozen=True, slots=True)
class GovernanceConfig:
    """The settings governance needs (from ``server.settings.Settings``)."""

    approval_timeout_s: float = 300.0
    token_ttl_s: int = 300
    global_kill_switch: bool = False
    expiry_interval_s: float = 1.0
    step_linger_s: float = 1.0
    prune_interval_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class ActivePolicy:
    """A project's active policy, parsed, with its stored identity."""

    policy: Policy
    version: int
    policy_id: str


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """What ``POST /v1/decisions`` answers."""

    decision: Decision
    policy_version: int | None
    approval: Approval | None = None
    token: str | None = None
    token_id: str | None = None
    expires_ns: int | None = None


@dataclass(frozen=True, slots=True)
class PendingDecision:
    """A decision made but not yet recorded: its answer, audit record and policy step."""

    outcome: DecisionOutcome
    tenant: str
    project: str
    audit: AuditEntry
    step: StepDraft


class Governance:
    """Decisions, approvals, policies, kill switch, break-glass and the ingest binding hook."""

    def __init__(self, index: RunIndex, keys: SigningKeys, record: RecordSteps,
                 config: GovernanceConfig | None = None) -> None:
        self.index, self.keys, self.config = index, keys, config or GovernanceConfig()
        self.recorder = StepRecorder(record, index, linger_s=self.config.step_linger_s)
        self.waiters = ApprovalWaiters()
        self.binder = Binder(index, keys=lambda: self.keys, active_policy=self.active_policy,
                             record_step=self.recorder.add, before_check=self.recorder.flush)
        self._cache_lock = threading.Lock()
        self._generation = 0
        self._policies: dict[tuple[str, str], ActivePolicy | None] = {}
        self._kill_switches: dict[str, bool] = {}
        self._stop = threading.Event()
        self._jobs: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the step recorder and the approvals expiry job."""
        self.recorder.start()
        self._jobs = threading.Thread(target=self._run_jobs, name="governance-jobs", daemon=True)
        self._jobs.start()

    def stop(self) -> None:
        """Stop the jobs and record the last steps (call before the flusher stops)."""
        self._stop.set()
        if self._jobs is not None:
            self._jobs.join(timeout=10)
        self.recorder.stop()

    def _run_jobs(self) -> None:
        last_prune = time.monotonic()
        while not self._stop.wait(self.config.expiry_interval_s):
            try:
                self.expire_overdue()
                if time.monotonic() - last_prune >= self.config.prune_interval_s:
                    last_prune = time.monotonic()
                    store.prune_binding_state(self.index, before_ns=time.time_ns() - (MAX_TTL_S + 3600) * 10**9)
            except Exception:  # a background loop: log and keep going
                logger.exception("governance job failed")

    # -- caches -----------------------------------------------------------------------------------------------

    def active_policy(self, tenant_id: str, project_id: str) -> ActivePolicy | None:
        """The project's active policy (cached until the next activation)."""
        key = (tenant_id, project_id)
        hit = self._policies.get(key, _MISS)
        if hit is not _MISS:
            return hit  # type: ignore[no-any-return]
        generation = self._generation
        record = store.active_policy(self.index, tenant_id, project_id)
        value = ActivePolicy(record.to_policy(), record.version, record.policy_id) if record else None
        with self._cache_lock:
            if generation == self._generation:  # no activation raced with this load
                self._policies[key] = value
        return value

    def kill_switch_on(self, tenant_id: str) -> bool:
        """Whether external writes are stopped for this tenant (its switch, or the global one)."""
        if self.config.global_kill_switch:
            return True
        hit = self._kill_switches.get(tenant_id)
        if hit is not None:
            return hit
        generation = self._generation
        enabled = store.get_kill_switch(self.index, tenant_id).enabled
        with self._cache_lock:
            if generation == self._generation:
                self._kill_switches[tenant_id] = enabled
        return enabled

    def _invalidate(self) -> None:
        with self._cache_lock:
            self._generation += 1
            self._policies.clear()
            self._kill_switches.clear()

    def kill_switch_blocks(self, tenant_id: str, project_id: str, tool: str, claimed_class: str | None) -> bool:
        """Whether the kill switch denies this tool now (external writes, or tools of unknown class)."""
        if not self.kill_switch_on(tenant_id):
            return False
        active = self.active_policy(tenant_id, project_id)
        action_class = (tool_config(active.policy, tool).action_class if active else None) or claimed_class
        return action_class in (None, EXTERNAL_WRITE)

    # -- policies and kill switch -----------------------------------------------------------------------------

    def create_policy(self, principal: Principal, project_id: str, policy: Policy, *, source: str,
                      content_type: str) -> store.PolicyRecord:
        """Store a new (inactive) version of a project's policy in the principal's tenant."""
        return store.create_policy(self.index, tenant_id=principal.tenant_id, project_id=project_id,
                                   policy=policy, source=source, content_type=content_type,
                                   actor=principal.actor)

    def activate_policy(self, principal: Principal, project_id: str, policy_id: str) -> store.PolicyRecord:
        """Activate a version; the next decision uses it."""
        record = store.activate_policy(self.index, tenant_id=principal.tenant_id, project_id=project_id,
                                       policy_id=policy_id, actor=principal.actor)
        self._invalidate()
        return record

    def set_kill_switch(self, principal: Principal, *, enabled: bool, reason: str | None) -> store.KillSwitch:
        """Flip the principal's tenant kill switch (audited)."""
        state = store.set_kill_switch(self.index, principal.tenant_id, enabled=enabled, reason=reason,
                                      actor=principal.actor)
        self._invalidate()
        return state

    # -- decisions --------------------------------------------------------------------------------------------

    def decide(self, principal: Principal, request: DecisionRequest, *, trace_id: str, span_id: str,
               context: ApprovalContext) -> DecisionOutcome:
        """Evaluate a tool call; allow → a signed token, require_approval → a pending approval (blocking)."""
        pending = self.prepare_decision(principal, request, trace_id=trace_id, span_id=span_id, context=context)
        self.record_decision(pending)
        return pending.outcome

    async def decide_async(self, principal: Principal, request: DecisionRequest, *, trace_id: str, span_id: str,
                           context: ApprovalContext) -> DecisionOutcome:
        """:meth:`decide` on the event loop: only storing a new approval (a SQLite write) goes to a thread.

        Evaluating and signing take ~0.1 ms, less than handing the request to a worker thread and back.
        """
        pending = self.prepare_decision(principal, request, trace_id=trace_id, span_id=span_id, context=context)
        if pending.outcome.approval is not None:
            await asyncio.to_thread(self.record_decision, pending)
        else:
            self.record_decision(pending)  # queues only
        return pending.outcome

    def prepare_decision(self, principal: Principal, request: DecisionRequest, *, trace_id: str, span_id: str,
                         context: ApprovalContext) -> PendingDecision:
        """Validate, evaluate and (for allow) sign; nothing is written yet."""
        check_ids(trace_id, span_id)
        check_tool_name(request.tool_name)
        digest = args_digest(request.args)
        tenant, project = principal.tenant_id, principal.project_id
        active = self.active_policy(tenant, project)
        kill = self.kill_switch_on(tenant)
        decision = evaluate(active.policy if active else None, request, kill_switch=kill)
        version = active.version if active else None
        now_ns = time.time_ns()
        outcome = DecisionOutcome(decision, version)
        if decision.decision == "allow":
            token_id, token, expires_ns = self._issue(
                tenant, project, request.tool_name, digest, trace_id, span_id, now_ns, decision="allow",
                approval_id=None, policy_version=version)
            outcome = DecisionOutcome(decision, version, token=token, token_id=token_id, expires_ns=expires_ns)
        elif decision.decision == "require_approval":
            approval = create_approval(
                tenant=tenant, project=project, request=request, trace_id=trace_id, span_id=span_id,
                requested_by=principal.actor, now_ns=now_ns, context=context, decision=decision,
                policy_version=version, timeout_s=self.config.approval_timeout_s)
            outcome = DecisionOutcome(decision, version, approval=approval, expires_ns=approval.expires_ns)
        details = {"tool": request.tool_name, "decision": decision.decision, "reason_code": decision.reason_code,
                   "rule_id": decision.rule_id, "policy_version": version, "trace_id": trace_id,
                   "span_id": span_id, "args_sha256": digest, "jti": outcome.token_id,
                   "approval_id": outcome.approval.id if outcome.approval else None, "kill_switch": kill}
        payload = {**details, "tool_name": request.tool_name, "args": dict(request.args), "agent": request.agent,
                   "environment": request.environment, "context": context.to_dict() or None,
                   "policy_id": active.policy_id if active else None}
        del payload["tool"]
        step = server_step(trace_id, secrets.token_hex(8), span_id, StepType.POLICY, f"decision {request.tool_name}",
                     now_ns, payload, tool=request.tool_name, agent=request.agent)
        audit = AuditEntry(principal.actor, "policy.decision", trace_id, details | {"decided_ns": now_ns})
        return PendingDecision(outcome, tenant, project, audit, step)

    def record_decision(self, pending: PendingDecision) -> None:
        """Store a new approval with its audit record (blocking), else queue the audit record; queue the step."""
        if pending.outcome.approval is not None:  # the agent polls it next: store it before answering
            store.record_decision(self.index, pending.tenant, approval=pending.outcome.approval, audit=pending.audit)
        else:
            self.recorder.add_audit(pending.tenant, pending.audit)
        self.recorder.add(pending.tenant, pending.project, pending.step)

    def break_glass(self, principal: Principal, project_id: str, request: DecisionRequest, *, trace_id: str,
                    span_id: str, justification: str, ttl_s: int | None) -> DecisionOutcome:
        """An admin's token without policy or approval: audited and marked in the run.

        Raises:
            InvalidInputError: missing justification or bad ids/args.
            ConflictError: the kill switch stops this tool (turn it off first; that is audited too).
        """
        check_ids(trace_id, span_id)
        check_tool_name(request.tool_name)
        if not justification.strip() or len(justification) > MAX_TEXT_CHARS:
            raise InvalidInputError("a justification is required (at most 4000 characters)",
                                    details={"justification": "required"})
        ttl = ttl_s or self.config.token_ttl_s
        if not 0 < ttl <= MAX_TTL_S:
            raise InvalidInputError(f"ttl_s must be in (0, {MAX_TTL_S}]", details={"ttl_s": "out of range"})
        digest = args_digest(request.args)
        tenant, project = principal.tenant_id, project_id
        if self.kill_switch_blocks(tenant, project, request.tool_name, request.action_class):
            raise ConflictError("the kill switch is on for this tool; turn it off first",
                                details={"kill_switch": "on"})
        now_ns = time.time_ns()
        token_id, token, expires_ns = self._issue(tenant, project, request.tool_name, digest, trace_id, span_id,
                                                  now_ns, decision="allow", approval_id=None,
                                                  policy_version=None, break_glass=True, ttl_s=ttl)
        details = {"tool": request.tool_name, "trace_id": trace_id, "span_id": span_id, "args_sha256": digest,
                   "jti": token_id, "justification": justification, "break_glass": True}
        store.record_decision(self.index, tenant,
                              audit=AuditEntry(principal.actor, "break_glass.issue", trace_id, details))
        payload = {**details, "decision": "allow", "reason_code": "break_glass", "args": dict(request.args),
                   "issued_by": principal.actor}
        self.recorder.add(tenant, project, server_step(trace_id, secrets.token_hex(8), span_id, StepType.POLICY,
                                                 f"BREAK-GLASS {request.tool_name}", now_ns, payload,
                                                 tool=request.tool_name))
        return DecisionOutcome(Decision("allow", "break_glass"), None, token=token, token_id=token_id,
                               expires_ns=expires_ns)

    def _issue(self, tenant: str, project: str, tool: str, digest: str, trace_id: str, span_id: str,
               now_ns: int, *, decision: str, approval_id: str | None, policy_version: int | None,
               break_glass: bool = False, ttl_s: int | None = None) -> tuple[str, str, int]:
        jti = secrets.token_urlsafe(16)
        ttl = ttl_s or self.config.token_ttl_s
        token = issue_token(self.keys, tenant=tenant, project=project, tool=tool, args_sha256=digest,
                            trace_id=trace_id, span_id=span_id, decision=decision, approval_id=approval_id,
                            policy_version=policy_version, break_glass=break_glass, ttl_s=ttl,
                            now=now_ns / 1e9, jti=jti)
        return jti, token, (now_ns // 10**9 + ttl) * 10**9

    # -- approvals --------------------------------------------------------------------------------------------

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
            if self.kill_switch_blocks(a.tenant, a.project, a.tool, a.action_class):
                raise ConflictError("the kill switch is on for this tool: it can only be denied",
                                    details={"kill_switch": "on"})
            active = self.active_policy(a.tenant, a.project)
            done = approve(a, approver=principal.actor, now_ns=now_ns, edited_args=edited_args,
                           policy=active.policy if active else None, reason=reason)
            token_id, token, _ = self._issue(a.tenant, a.project, a.tool, args_digest(done.approved_args),
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

    # -- binding (the ingest hook) ----------------------------------------------------------------------------

    def bind(self, tenant_id: str, project_id: str, span: OtelSpan) -> tuple[str | None, str | None]:
        """``IngestPipeline``'s ``bind=`` hook: (binding, decision_token_id) of one raw span (``server.binding``)."""
        return self.binder.bind_span(tenant_id, project_id, span)

    def bind_step(self, tenant_id: str, project_id: str, draft: StepDraft) -> tuple[str | None, str | None]:
        """The same for a REST step."""
        return self.binder.bind_step(tenant_id, project_id, draft)


# ---------------------------------------------------------------- validation helpers


def check_ids(trace_id: str, span_id: str) -> None:
    """trace_id: 32 and span_id: 16 lower-case hex characters, not all zero (W3C trace context)."""
    for name, value, size in (("trace_id", trace_id, 32), ("span_id", span_id, 16)):
        if len(value) != size or not set(value) <= _HEX or not value.strip("0"):
            raise InvalidInputError(f"{name} must be {size} lower-case hex characters, not all zero",
                                    details={name: "invalid"})


def check_tool_name(tool_name: str) -> None:
    """A tool name of 1 to 256 characters."""
    if not tool_name or len(tool_name) > MAX_TOOL_NAME_CHARS:
        raise InvalidInputError("tool_name must have 1 to 256 characters", details={"tool_name": "invalid"})


def check_reason(reason: str | None) -> None:
    """An optional free-text reason of at most 4000 characters."""
    if reason is not None and len(reason) > MAX_TEXT_CHARS:
        raise InvalidInputError("reason: at most 4000 characters", details={"reason": "too long"})


def args_digest(args: Mapping[str, Any], *, field: str = "args") -> str:
    """sha256 hex of the canonical JSON of tool arguments (what tokens bind), at most 64 KiB of it.

    Raises:
        InvalidInputError: over 64 KiB canonical, or not canonicalisable (e.g. integers beyond 64 bits).
    """
    try:
        encoded = canonical_json(args)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{field}: cannot be canonicalised ({exc})", details={field: "invalid"}) from exc
    if len(encoded) > MAX_ARGS_BYTES:
        raise InvalidInputError(f"{field}: {len(encoded)} bytes of canonical JSON, over the {MAX_ARGS_BYTES}-byte "
                                "limit", details={field: "too large"})
    return hashlib.sha256(encoded).hexdigest()


def _visible(principal: Principal, approval: Approval) -> bool:
    return principal.can("read") or approval.project == principal.project_id


def _as_of(record: ApprovalRecord, now_ns: int) -> ApprovalRecord:
    return ApprovalRecord(expire(record.approval, now_ns=now_ns), record.token, record.token_id)


# ---------------------------------------------------------------- server-made steps


def _approval_step(record: ApprovalRecord) -> StepDraft:
    a = record.approval
    payload = {"approval_id": a.id, "status": a.status, "tool_name": a.tool, "decided_by": a.decided_by,
               "reason": a.reason, "args": dict(a.approved_args), "edited": a.edited_args is not None,
               "jti": record.token_id, "policy_version": a.policy_version, "requested_by": a.requested_by}
    return server_step(a.trace_id, derived_span_id("approval", a.id, a.status), a.span_id, StepType.APPROVAL,
                 f"approval {a.status} {a.tool}", a.decided_ns or time.time_ns(), payload, tool=a.tool,
                 agent=a.agent)


def governance_from_settings(settings: Settings, index: RunIndex, record: RecordSteps) -> Governance:
    """Load (or create) the signing keys and build the service from the server's settings."""
    config = GovernanceConfig(approval_timeout_s=settings.approval_timeout_s,
                              token_ttl_s=settings.decision_token_ttl_s,
                              global_kill_switch=settings.kill_switch_external_write,
                              step_linger_s=settings.decision_step_linger_s)
    return Governance(index, load_signing_keys(settings.signing_key_file), record, config)
