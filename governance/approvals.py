"""The approval state machine, pure: frozen approvals and transitions that return new ones.

    pending ──approve──► approved
       │ ───deny─────► denied
       └───deadline──► expired          (approved, denied and expired are terminal)

Rules: the requester cannot approve its own request (it may deny it, which is always
safe); acting on a terminal or overdue approval is a conflict; approving with edited
arguments re-evaluates them against the policy, which must still answer allow or
require_approval. Times are integer nanoseconds passed in by the caller (no clock
here), so storage can persist exactly what a transition returns. Roles (who may
approve at all) are checked by the caller.

The kill switch is not consulted here: whoever issues the token for an approved
approval must re-check it, since it overrides approvals.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from governance.evaluate import Decision, DecisionRequest, evaluate
from governance.policy import Policy
from otlp_receiver.errors import ConflictError, InvalidInputError, PermissionDeniedError, UnprocessableError

logger = logging.getLogger(__name__)

ApprovalStatus = Literal["pending", "approved", "denied", "expired"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"approved", "denied", "expired"})
DEFAULT_APPROVAL_TIMEOUT_S = 300
MAX_TEXT_CHARS = 4000
MAX_EVIDENCE_LINKS = 50
_CONTEXT_KEYS = ("summary", "risk_score", "blast_radius", "evidence_links", "rollback_plan")


@dataclass(frozen=True, slots=True)
class ApprovalContext:
    """What an approver sees besides the call itself (all optional)."""

    summary: str | None = None
    risk_score: float | None = None
    blast_radius: str | None = None
    evidence_links: tuple[str, ...] = ()
    rollback_plan: str | None = None

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> ApprovalContext:
        """Validate a wire ``context`` object; unknown keys are rejected.

        Raises:
            InvalidInputError: with ``details`` naming the offending ``context.<field>``.
        """
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            _bad("context", "expected an object")
        for key in value:
            if key not in _CONTEXT_KEYS:
                _bad(f"context.{key}", "unknown field")
        return cls(
            summary=_text(value, "summary"),
            risk_score=_risk(value.get("risk_score")),
            blast_radius=_text(value, "blast_radius"),
            evidence_links=_links(value.get("evidence_links")),
            rollback_plan=_text(value, "rollback_plan"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire form (absent fields omitted)."""
        out: dict[str, Any] = {
            k: getattr(self, k) for k in _CONTEXT_KEYS if getattr(self, k) not in (None, ())
        }
        if self.evidence_links:
            out["evidence_links"] = list(self.evidence_links)
        return out


def _bad(field: str, message: str) -> Any:
    raise InvalidInputError(f"{field}: {message}", details={field: message})


def _text(value: Mapping[str, Any], key: str) -> str | None:
    text = value.get(key)
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT_CHARS):
        _bad(f"context.{key}", f"expected a string of at most {MAX_TEXT_CHARS} characters")
    return text


def _risk(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _bad("context.risk_score", "expected a finite number")
    return float(value)


def _links(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_EVIDENCE_LINKS:
        _bad("context.evidence_links", f"expected a list of at most {MAX_EVIDENCE_LINKS} links")
    if not all(isinstance(link, str) and 0 < len(link) <= 2048 for link in value):
        _bad("context.evidence_links", "each link must be a non-empty string of at most 2048 characters")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval request and, once decided, its outcome.

    Flat on purpose (one column per field). ``agent``, ``environment``,
    ``action_class`` and ``autonomy_level`` are kept so edited arguments can be
    re-evaluated exactly as the original request was.
    """

    id: str
    tenant: str
    project: str
    tool: str
    args: Mapping[str, Any]
    trace_id: str
    span_id: str
    requested_by: str
    context: ApprovalContext
    status: ApprovalStatus
    created_ns: int
    expires_ns: int
    agent: str | None = None
    environment: str | None = None
    action_class: str | None = None
    autonomy_level: str | None = None
    policy_version: int | None = None
    rule_id: str | None = None
    reason_code: str | None = None
    decided_by: str | None = None
    decided_ns: int | None = None
    reason: str | None = None
    edited_args: Mapping[str, Any] | None = None

    @property
    def approved_args(self) -> Mapping[str, Any]:
        """The arguments the tool may run with: the edited ones when the approver changed them."""
        return self.edited_args if self.edited_args is not None else self.args

    @property
    def is_terminal(self) -> bool:
        """Whether no further transition is possible."""
        return self.status in TERMINAL_STATUSES

    def decision_request(self, args: Mapping[str, Any] | None = None) -> DecisionRequest:
        """The request this approval was created for, optionally with other arguments."""
        return DecisionRequest(
            tool_name=self.tool,
            args=self.args if args is None else args,
            agent=self.agent,
            environment=self.environment,
            action_class=self.action_class,
            autonomy_level=self.autonomy_level,
        )


def create_approval(
    *,
    tenant: str,
    project: str,
    request: DecisionRequest,
    trace_id: str,
    span_id: str,
    requested_by: str,
    now_ns: int,
    context: ApprovalContext | None = None,
    decision: Decision | None = None,
    policy_version: int | None = None,
    timeout_s: float = DEFAULT_APPROVAL_TIMEOUT_S,
    approval_id: str | None = None,
) -> Approval:
    """A new pending approval that expires ``timeout_s`` after ``now_ns``."""
    if timeout_s <= 0:
        raise InvalidInputError(f"approval timeout must be positive, got {timeout_s}")
    return Approval(
        id=approval_id or str(uuid.uuid4()),
        tenant=tenant,
        project=project,
        tool=request.tool_name,
        args=dict(request.args),
        trace_id=trace_id,
        span_id=span_id,
        requested_by=requested_by,
        context=context or ApprovalContext(),
        status="pending",
        created_ns=now_ns,
        expires_ns=now_ns + int(timeout_s * 1_000_000_000),
        agent=request.agent,
        environment=request.environment,
        action_class=request.action_class,
        autonomy_level=request.autonomy_level,
        policy_version=policy_version,
        rule_id=decision.rule_id if decision else None,
        reason_code=decision.reason_code if decision else None,
    )


def is_overdue(approval: Approval, now_ns: int) -> bool:
    """A pending approval whose deadline has passed (it should be expired)."""
    return approval.status == "pending" and now_ns >= approval.expires_ns


def expire(approval: Approval, *, now_ns: int) -> Approval:
    """The approval as of ``now_ns``: expired if it was pending and overdue, else unchanged."""
    if not is_overdue(approval, now_ns):
        return approval
    return replace(approval, status="expired", decided_ns=now_ns, reason="approval deadline passed")


def approve(
    approval: Approval,
    *,
    approver: str,
    now_ns: int,
    edited_args: Mapping[str, Any] | None = None,
    policy: Policy | None = None,
    reason: str | None = None,
) -> Approval:
    """Approve, optionally with edited arguments that must still satisfy ``policy``.

    Raises:
        ConflictError: the approval is terminal or overdue.
        PermissionDeniedError: ``approver`` is the requester.
        UnprocessableError: the edited arguments would now be denied.
    """
    _check_open(approval, now_ns)
    if approver == approval.requested_by:
        raise PermissionDeniedError("the requester cannot approve its own request")
    edits = dict(edited_args) if edited_args is not None else None
    if edits is not None and edits != dict(approval.args):
        _check_edits(approval, edits, policy)
    else:
        edits = None
    logger.info("approval %s approved by %s%s", approval.id, approver, " with edits" if edits else "")
    return replace(
        approval, status="approved", decided_by=approver, decided_ns=now_ns, reason=reason, edited_args=edits
    )


def deny(approval: Approval, *, approver: str, now_ns: int, reason: str | None = None) -> Approval:
    """Deny; the reason is kept as feedback. The requester may deny its own request.

    Raises:
        ConflictError: the approval is terminal or overdue.
    """
    _check_open(approval, now_ns)
    logger.info("approval %s denied by %s", approval.id, approver)
    return replace(approval, status="denied", decided_by=approver, decided_ns=now_ns, reason=reason)


def _check_open(approval: Approval, now_ns: int) -> None:
    if approval.is_terminal:
        raise ConflictError(f"approval {approval.id} is already {approval.status}")
    if is_overdue(approval, now_ns):
        raise ConflictError(f"approval {approval.id} expired", details={"status": "expired"})


def _check_edits(approval: Approval, edits: dict[str, Any], policy: Policy | None) -> None:
    decision = evaluate(policy, approval.decision_request(edits))
    if decision.decision not in ("allow", "require_approval"):
        raise UnprocessableError(
            f"the edited arguments are not allowed by the policy ({decision.reason_code})",
            details={"edited_args": decision.reason_code, "rule_id": decision.rule_id or ""},
        )
