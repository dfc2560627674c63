"""The approval state machine: transitions, self-approval, edited args, expiry, context validation."""

from __future__ import annotations

import pytest

from governance.approvals import (
    ApprovalContext,
    approve,
    create_approval,
    deny,
    expire,
    is_overdue,
)
from governance.evaluate import Decision, DecisionRequest
from governance.policy import parse_policy
from otlp_receiver.errors import ConflictError, InvalidInputError, PermissionDeniedError, UnprocessableError

T0 = 1_800_000_000 * 10**9
S = 10**9
POLICY = parse_policy(
    "default: {decision: deny, reason_code: default_deny}\n"
    "rules:\n"
    "  - {id: huge, decision: deny, reason_code: too_big, match: {tool: pay, args: {$.amount: {gt: 10000}}}}\n"
    "  - {id: wire, decision: require_approval, reason_code: payment, match: {tool: pay, agent: billing}}\n"
)


def pending(**overrides):
    fields = dict(
        tenant="acme", project="billing",
        request=DecisionRequest("pay", {"amount": 500, "to": "bob"}, agent="billing", environment="prod"),
        trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331", requested_by="agent-key-1",
        now_ns=T0, decision=Decision("require_approval", "payment", "wire"), policy_version=3,
        context=ApprovalContext(summary="pay bob", risk_score=0.4),
    )  # fmt: skip
    return create_approval(**(fields | overrides))


def test_create_makes_a_pending_approval_with_a_five_minute_default_deadline():
    approval = pending()
    assert approval.status == "pending" and not approval.is_terminal
    assert approval.expires_ns == T0 + 300 * S
    assert (approval.tool, approval.args, approval.agent) == ("pay", {"amount": 500, "to": "bob"}, "billing")
    assert (approval.rule_id, approval.reason_code, approval.policy_version) == ("wire", "payment", 3)
    assert pending(timeout_s=30).expires_ns == T0 + 30 * S
    assert pending().id != pending().id


def test_approve_as_is():
    approved = approve(pending(), approver="alice", now_ns=T0 + S, reason="looks fine")
    assert (approved.status, approved.decided_by, approved.decided_ns) == ("approved", "alice", T0 + S)
    assert approved.edited_args is None and approved.approved_args == {"amount": 500, "to": "bob"}
    assert approved.is_terminal


def test_transitions_return_new_instances():
    original = pending()
    approve(original, approver="alice", now_ns=T0)
    assert original.status == "pending"


def test_approve_with_edited_args_within_policy():
    approved = approve(
        pending(), approver="alice", now_ns=T0, edited_args={"amount": 400, "to": "bob"}, policy=POLICY
    )
    assert approved.edited_args == {"amount": 400, "to": "bob"}
    assert approved.approved_args == {"amount": 400, "to": "bob"}


def test_approve_with_edited_args_the_policy_denies_is_unprocessable():
    with pytest.raises(UnprocessableError, match="too_big"):
        approve(
            pending(), approver="alice", now_ns=T0, edited_args={"amount": 50_000, "to": "bob"}, policy=POLICY
        )


def test_edited_args_are_evaluated_with_the_original_context():
    approval = pending(request=DecisionRequest("pay", {"amount": 5}, agent="someone-else"))
    with pytest.raises(UnprocessableError, match="default_deny"):  # the 'wire' rule needs agent=billing
        approve(approval, approver="alice", now_ns=T0, edited_args={"amount": 4}, policy=POLICY)


def test_edited_args_without_an_active_policy_are_rejected():
    with pytest.raises(UnprocessableError, match="no_active_policy"):
        approve(pending(), approver="alice", now_ns=T0, edited_args={"amount": 1}, policy=None)


def test_unchanged_edited_args_count_as_no_edit():
    approved = approve(pending(), approver="alice", now_ns=T0, edited_args={"to": "bob", "amount": 500})
    assert approved.edited_args is None


def test_requester_cannot_approve_its_own_request():
    with pytest.raises(PermissionDeniedError):
        approve(pending(), approver="agent-key-1", now_ns=T0)


def test_requester_may_deny_its_own_request():
    assert deny(pending(), approver="agent-key-1", now_ns=T0).status == "denied"


def test_deny_keeps_the_reason_as_feedback():
    denied = deny(pending(), approver="alice", now_ns=T0 + S, reason="wrong recipient")
    assert (denied.status, denied.reason, denied.decided_by) == ("denied", "wrong recipient", "alice")


@pytest.mark.parametrize(
    "decided",
    [
        lambda a: approve(a, approver="alice", now_ns=T0),
        lambda a: deny(a, approver="alice", now_ns=T0),
        lambda a: expire(a, now_ns=T0 + 301 * S),
    ],
)
def test_acting_on_a_terminal_approval_conflicts(decided):
    terminal = decided(pending())
    assert terminal.is_terminal
    with pytest.raises(ConflictError, match="already"):
        approve(terminal, approver="bob", now_ns=T0 + 2 * S)
    with pytest.raises(ConflictError, match="already"):
        deny(terminal, approver="bob", now_ns=T0 + 2 * S)


def test_expiry_by_deadline():
    approval = pending(timeout_s=60)
    assert not is_overdue(approval, T0 + 59 * S)
    assert expire(approval, now_ns=T0 + 59 * S) is approval
    assert is_overdue(approval, T0 + 60 * S)
    expired = expire(approval, now_ns=T0 + 60 * S)
    assert (expired.status, expired.decided_ns) == ("expired", T0 + 60 * S)
    assert expire(expired, now_ns=T0 + 120 * S) is expired


def test_overdue_pending_approval_cannot_be_decided():
    with pytest.raises(ConflictError, match="expired"):
        approve(pending(timeout_s=60), approver="alice", now_ns=T0 + 61 * S)
    with pytest.raises(ConflictError, match="expired"):
        deny(pending(timeout_s=60), approver="alice", now_ns=T0 + 61 * S)


def test_non_positive_timeout_is_rejected():
    with pytest.raises(InvalidInputError):
        pending(timeout_s=0)


def test_context_from_dict_round_trips():
    wire = {
        "summary": "refund order A-1", "risk_score": 0.7, "blast_radius": "one customer",
        "evidence_links": ["https://dash/1", "trace:abc"], "rollback_plan": "charge again",
    }  # fmt: skip
    context = ApprovalContext.from_dict(wire)
    assert context.evidence_links == ("https://dash/1", "trace:abc")
    assert context.to_dict() == wire
    assert ApprovalContext.from_dict(None) == ApprovalContext()


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ({"colour": "red"}, "context.colour"),
        ({"risk_score": "high"}, "context.risk_score"),
        ({"risk_score": True}, "context.risk_score"),
        ({"summary": 3}, "context.summary"),
        ({"evidence_links": "https://x"}, "context.evidence_links"),
        ({"evidence_links": [""]}, "context.evidence_links"),
        ([1, 2], "context"),
    ],
)
def test_context_validation_names_the_field(wire, field):
    with pytest.raises(InvalidInputError) as info:
        ApprovalContext.from_dict(wire)
    assert field in info.value.details
