"""Decisions on tool calls: evaluate the active policy, sign a token on allow, open an approval if needed.

A decision's answer never waits on the single SQLite writer: its audit record and policy step are queued
on the ``StepRecorder``. Only a new pending approval is written before answering (the agent polls it next).
Break-glass tokens are issued here too. Imports the governance core and store, ``otlp_receiver`` (errors,
model, index) and the server's auth, signing, policy-state, checks and step-recorder modules.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

from governance import store
from governance.approvals import Approval, ApprovalContext, create_approval
from governance.evaluate import Decision, DecisionRequest, evaluate
from governance.store import AuditEntry
from governance.tokens import MAX_TTL_S
from otlp_receiver.errors import ConflictError, InvalidInputError
from otlp_receiver.model import StepDraft, StepType
from otlp_receiver.store.index import RunIndex
from server.auth import Principal
from server.governance_checks import MAX_TEXT_CHARS, args_digest, check_ids, check_tool_name
from server.policy_state import ActivePolicy, PolicyState
from server.signing import TokenIssuer
from server.step_recorder import StepRecorder, server_step


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


@dataclass(frozen=True, slots=True)
class _ToolCall:
    """One checked tool call being decided: who asks, what, under which span, and when."""

    principal: Principal
    request: DecisionRequest
    trace_id: str
    span_id: str
    context: ApprovalContext
    digest: str
    now_ns: int


class Decisions:
    """``POST /v1/decisions`` and break-glass: evaluate, sign, open approvals, and record what was decided."""

    def __init__(self, index: RunIndex, policies: PolicyState, issuer: TokenIssuer, recorder: StepRecorder, *,
                 approval_timeout_s: float = 300.0) -> None:
        self.index, self.policies, self.issuer, self.recorder = index, policies, issuer, recorder
        self.approval_timeout_s = approval_timeout_s

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
        active = self.policies.active_policy(tenant, project)
        kill = self.policies.kill_switch_on(tenant)
        decision = evaluate(active.policy if active else None, request, kill_switch=kill)
        call = _ToolCall(principal, request, trace_id, span_id, context, digest, time.time_ns())
        outcome = self._outcome(call, decision, active.version if active else None)
        details = _decision_details(call, outcome, kill_switch=kill)
        audit = AuditEntry(principal.actor, "policy.decision", trace_id, details | {"decided_ns": call.now_ns})
        return PendingDecision(outcome, tenant, project, audit, _decision_step(call, details, active))

    def _outcome(self, call: _ToolCall, decision: Decision, version: int | None) -> DecisionOutcome:
        tenant, project, request = call.principal.tenant_id, call.principal.project_id, call.request
        if decision.decision == "allow":
            token_id, token, expires_ns = self.issuer.issue(
                tenant, project, request.tool_name, call.digest, call.trace_id, call.span_id, call.now_ns,
                decision="allow", approval_id=None, policy_version=version)
            return DecisionOutcome(decision, version, token=token, token_id=token_id, expires_ns=expires_ns)
        if decision.decision == "require_approval":
            approval = create_approval(
                tenant=tenant, project=project, request=request, trace_id=call.trace_id, span_id=call.span_id,
                requested_by=call.principal.actor, now_ns=call.now_ns, context=call.context, decision=decision,
                policy_version=version, timeout_s=self.approval_timeout_s)
            return DecisionOutcome(decision, version, approval=approval, expires_ns=approval.expires_ns)
        return DecisionOutcome(decision, version)

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
        ttl = ttl_s or self.issuer.ttl_s
        _check_break_glass(justification, ttl)
        digest = args_digest(request.args)
        tenant, project = principal.tenant_id, project_id
        if self.policies.kill_switch_blocks(tenant, project, request.tool_name, request.action_class):
            raise ConflictError("the kill switch is on for this tool; turn it off first",
                                details={"kill_switch": "on"})
        now_ns = time.time_ns()
        token_id, token, expires_ns = self.issuer.issue(tenant, project, request.tool_name, digest, trace_id,
                                                        span_id, now_ns, decision="allow", approval_id=None,
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


def _check_break_glass(justification: str, ttl_s: int) -> None:
    if not justification.strip() or len(justification) > MAX_TEXT_CHARS:
        raise InvalidInputError("a justification is required (at most 4000 characters)",
                                details={"justification": "required"})
    if not 0 < ttl_s <= MAX_TTL_S:
        raise InvalidInputError(f"ttl_s must be in (0, {MAX_TTL_S}]", details={"ttl_s": "out of range"})


def _decision_details(call: _ToolCall, outcome: DecisionOutcome, *, kill_switch: bool) -> dict[str, Any]:
    """The decision's audit details (the policy step's payload adds to them)."""
    decision = outcome.decision
    return {"tool": call.request.tool_name, "decision": decision.decision, "reason_code": decision.reason_code,
            "rule_id": decision.rule_id, "policy_version": outcome.policy_version, "trace_id": call.trace_id,
            "span_id": call.span_id, "args_sha256": call.digest, "jti": outcome.token_id,
            "approval_id": outcome.approval.id if outcome.approval else None, "kill_switch": kill_switch}


def _decision_step(call: _ToolCall, details: dict[str, Any], active: ActivePolicy | None) -> StepDraft:
    request = call.request
    payload = {**details, "tool_name": request.tool_name, "args": dict(request.args), "agent": request.agent,
               "environment": request.environment, "context": call.context.to_dict() or None,
               "policy_id": active.policy_id if active else None}
    del payload["tool"]
    return server_step(call.trace_id, secrets.token_hex(8), call.span_id, StepType.POLICY,
                       f"decision {request.tool_name}", call.now_ns, payload, tool=request.tool_name,
                       agent=request.agent)
