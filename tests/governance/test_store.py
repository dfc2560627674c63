"""governance.store on a real (in-memory) SQLite index: policies, kill switch, approvals, binding records."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest

from governance import store
from governance.approvals import ApprovalContext, approve, create_approval
from governance.evaluate import DecisionRequest
from governance.policy import parse_policy
from governance.store import ApprovalFilters, ApprovalRecord, AuditEntry
from otlp_receiver.errors import ConflictError, InvalidInputError, NotFoundError, StorageError
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex

POLICY = parse_policy("default: {decision: deny, reason_code: d}\nrules: []\n")
ALLOW = parse_policy("default: {decision: allow, reason_code: a}\nrules: []\n")
TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


@pytest.fixture
def index() -> RunIndex:
    return RunIndex(":memory:")


def _policy(index: RunIndex, tenant: str = "t1", project: str = "p1") -> store.PolicyRecord:
    return store.create_policy(index, tenant_id=tenant, project_id=project, policy=POLICY, source="x",
                               content_type="application/yaml", actor="key:admin")


def _approval(index: RunIndex, *, tenant: str = "t1", tool: str = "pay", created_ns: int = 1_000,
              approval_id: str | None = None) -> ApprovalRecord:
    approval = create_approval(tenant=tenant, project="p1", request=DecisionRequest(tool, {"amount": 5}),
                               trace_id=TRACE, span_id=SPAN, requested_by="k-agent", now_ns=created_ns,
                               context=ApprovalContext(summary="pay bob"), timeout_s=10,
                               approval_id=approval_id)
    store.record_decision(index, tenant, approval=approval, audit=AuditEntry("k-agent", "policy.decision", TRACE))
    return ApprovalRecord(approval)


def _actions(index: RunIndex, tenant: str = "t1") -> list[str]:
    rows, _ = AuditLog(index).list(tenant, limit=1000)
    return [r["action"] for r in reversed(rows)]


def test_policy_versions_are_numbered_per_project(index: RunIndex) -> None:
    versions = [_policy(index).version, _policy(index).version, _policy(index, project="p2").version,
                _policy(index, tenant="t2").version]
    assert versions == [1, 2, 1, 1]
    assert [r.version for r in store.list_policies(index, "t1", "p1")] == [2, 1]
    assert _actions(index) == ["policy.create"] * 3


def test_stored_policy_round_trips_to_an_equal_policy(index: RunIndex) -> None:
    record = _policy(index)
    assert record.to_policy() == POLICY
    assert store.get_policy(index, "t1", "p1", record.policy_id) == record


def test_activate_keeps_exactly_one_active_version(index: RunIndex) -> None:
    first, second = _policy(index), _policy(index)
    store.activate_policy(index, tenant_id="t1", project_id="p1", policy_id=first.policy_id, actor="a")
    store.activate_policy(index, tenant_id="t1", project_id="p1", policy_id=second.policy_id, actor="a")
    assert [(r.version, r.active) for r in store.list_policies(index, "t1", "p1")] == [(2, True), (1, False)]
    active = store.active_policy(index, "t1", "p1")
    assert active is not None and active.policy_id == second.policy_id and active.activated_by == "a"
    assert _actions(index)[-2:] == ["policy.activate", "policy.activate"]


def test_the_partial_unique_index_refuses_a_second_active_version(index: RunIndex) -> None:
    first, second = _policy(index), _policy(index)
    store.activate_policy(index, tenant_id="t1", project_id="p1", policy_id=first.policy_id, actor="a")
    with pytest.raises(StorageError), index.transaction() as db:
        db.execute("UPDATE policies SET active = 1 WHERE policy_id = ?", [second.policy_id])


def test_activate_of_another_tenants_policy_is_not_found_and_changes_nothing(index: RunIndex) -> None:
    foreign = _policy(index, tenant="t2")
    with pytest.raises(NotFoundError):
        store.activate_policy(index, tenant_id="t1", project_id="p1", policy_id=foreign.policy_id, actor="a")
    assert store.active_policy(index, "t2", "p1") is None
    assert _actions(index) == []


def test_kill_switch_defaults_off_and_each_flip_is_audited(index: RunIndex) -> None:
    assert not store.get_kill_switch(index, "t1").enabled
    store.set_kill_switch(index, "t1", enabled=True, reason="incident 42", actor="a")
    assert store.get_kill_switch(index, "t1").enabled and not store.get_kill_switch(index, "t2").enabled
    store.set_kill_switch(index, "t1", enabled=False, reason=None, actor="a")
    assert not store.get_kill_switch(index, "t1").enabled
    assert _actions(index) == ["kill_switch.enable", "kill_switch.disable"]


def test_approval_round_trips_through_its_row(index: RunIndex) -> None:
    record = _approval(index)
    assert store.get_approval(index, "t1", record.approval.id) == record
    assert store.get_approval(index, "t2", record.approval.id) is None


def test_update_approval_writes_the_transition_and_its_audit_record(index: RunIndex) -> None:
    record = _approval(index)

    def approve_it(current: ApprovalRecord) -> ApprovalRecord:
        done = approve(current.approval, approver="k-human", now_ns=2_000, edited_args={"amount": 4}, policy=ALLOW)
        return ApprovalRecord(done, "tok", "jti-1")

    updated = store.update_approval(index, "t1", record.approval.id, approve_it,
                                    audit=lambda r: AuditEntry("k-human", "approval.approve", r.approval.id))
    assert store.get_approval(index, "t1", record.approval.id) == updated
    assert updated.approval.edited_args == {"amount": 4} and updated.token_id == "jti-1"
    assert _actions(index)[-1] == "approval.approve"
    with pytest.raises(ConflictError):  # a second decision on the same approval
        store.update_approval(index, "t1", record.approval.id, approve_it,
                              audit=lambda r: AuditEntry("k-human", "approval.approve", r.approval.id))


def test_a_failing_transition_writes_nothing(index: RunIndex) -> None:
    record = _approval(index)

    def boom(_: ApprovalRecord) -> ApprovalRecord:
        raise ConflictError("no")

    with pytest.raises(ConflictError):
        store.update_approval(index, "t1", record.approval.id, boom, audit=lambda r: AuditEntry("x", "y"))
    assert store.get_approval(index, "t1", record.approval.id) == record
    assert _actions(index) == ["policy.decision"]


def test_update_of_a_foreign_tenants_approval_is_not_found(index: RunIndex) -> None:
    record = _approval(index, tenant="t2")
    with pytest.raises(NotFoundError):
        store.update_approval(index, "t1", record.approval.id, lambda r: r, audit=lambda r: AuditEntry("x", "y"))


def test_list_approvals_filters_and_pages_newest_first(index: RunIndex) -> None:
    made = [_approval(index, tool="pay" if i % 2 else "mail", created_ns=1_000 + i, approval_id=f"a{i}")
            for i in range(5)]
    _approval(index, tenant="t2")
    seen, cursor = [], None
    while True:
        page, cursor = store.list_approvals(index, "t1", ApprovalFilters(), limit=2, cursor=cursor)
        seen += [r.approval.id for r in page]
        if cursor is None:
            break
    assert seen == [r.approval.id for r in reversed(made)]
    pays, _ = store.list_approvals(index, "t1", ApprovalFilters(tool="pay", run=TRACE, status="pending"), limit=10)
    assert [r.approval.id for r in pays] == ["a3", "a1"]


@pytest.mark.parametrize("filters, cursor", [(ApprovalFilters(status="maybe"), None), (ApprovalFilters(), "!!")])
def test_list_approvals_rejects_bad_status_and_cursor(index: RunIndex, filters: ApprovalFilters,
                                                      cursor: str | None) -> None:
    with pytest.raises(InvalidInputError):
        store.list_approvals(index, "t1", filters, limit=10, cursor=cursor)


def test_overdue_approvals_are_pending_ones_past_their_deadline(index: RunIndex) -> None:
    early, late = _approval(index, created_ns=0), _approval(index, created_ns=10**12)
    assert store.overdue_approvals(index, now_ns=early.approval.expires_ns) == [("t1", early.approval.id)]
    assert len(store.overdue_approvals(index, now_ns=late.approval.expires_ns)) == 2


def _check(outcome: str, jti: str | None, calls: list[bool]) -> store.BindingCheck:
    def check(seen_jti: store.SeenJti) -> tuple[str, str | None]:
        replayed = seen_jti(jti) if jti else False
        calls.append(replayed)
        return ("replayed" if replayed else outcome), jti

    return check


def test_binding_is_checked_once_per_span_and_a_resent_span_is_not_a_replay(index: RunIndex) -> None:
    calls: list[bool] = []
    first = store.record_binding(index, tenant_id="t1", trace_id=TRACE, span_id=SPAN,
                                 check=_check("bound", "j1", calls), audit=lambda b, j: None)
    again = store.record_binding(index, tenant_id="t1", trace_id=TRACE, span_id=SPAN,
                                 check=_check("bound", "j1", calls), audit=lambda b, j: None)
    assert (first, again) == (store.BindingRecord("bound", "j1", True), store.BindingRecord("bound", "j1", False))
    assert calls == [False]


def test_a_jti_used_by_another_span_is_replayed_and_audited(index: RunIndex) -> None:
    calls: list[bool] = []
    audit = lambda b, j: AuditEntry("receiver", "binding.violation", j) if b != "bound" else None  # noqa: E731
    store.record_binding(index, tenant_id="t1", trace_id=TRACE, span_id=SPAN, check=_check("bound", "j1", calls),
                         audit=audit)
    other = store.record_binding(index, tenant_id="t1", trace_id=TRACE, span_id="c7ad6b7169203331",
                                 check=_check("bound", "j1", calls), audit=audit)
    elsewhere = store.record_binding(index, tenant_id="t2", trace_id=TRACE, span_id="d7ad6b7169203331",
                                     check=_check("bound", "j1", calls), audit=audit)
    assert (other.binding, elsewhere.binding) == ("replayed", "bound")  # jti uses are per tenant
    assert _actions(index) == ["binding.violation"]


def test_pruning_forgets_old_binding_state(index: RunIndex) -> None:
    store.record_binding(index, tenant_id="t1", trace_id=TRACE, span_id=SPAN, check=_check("bound", "j1", []),
                         audit=lambda b, j: None)
    assert store.prune_binding_state(index, before_ns=0) == 0
    assert store.prune_binding_state(index, before_ns=2**62) == 2


def test_the_audit_chain_still_verifies_after_governance_writes(index: RunIndex) -> None:
    record = _approval(index)
    store.set_kill_switch(index, "t1", enabled=True, reason=None, actor="a")
    store.activate_policy(index, tenant_id="t1", project_id="p1", policy_id=_policy(index).policy_id, actor="a")
    store.update_approval(index, "t1", record.approval.id,
                          lambda r: ApprovalRecord(replace(r.approval, status="denied", decided_ns=5)),
                          audit=lambda r: AuditEntry("a", "approval.deny", r.approval.id))
    verdict = AuditLog(index).verify("t1")
    assert verdict.ok and verdict.rows_checked == 5


def test_migrations_apply_to_an_empty_file(tmp_path: object) -> None:
    path = f"{tmp_path}/fresh.sqlite3"
    RunIndex(path)
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"policies", "approvals", "kill_switches", "token_uses", "binding_checks"} <= tables
