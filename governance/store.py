"""Governance's own SQLite tables: policy versions, approvals, kill switches, token uses, binding checks.

Every function takes the :class:`~otlp_receiver.store.index.RunIndex`: writes go through its single
writer (``index.transaction()``), reads through ``index.query``. Each state change and its audit
record (``otlp_receiver.store.audit``) commit in one transaction, so nothing is half-written.
Tables (migration ``m007_governance`` in ``otlp_receiver/store/migrations.py``)::

    policies        immutable versions per (tenant, project); at most one active (partial unique index)
    approvals       one row per approval (the flat ``governance.approvals.Approval``) + its issued token
    kill_switches   per-tenant kill switch for external writes
    token_uses      first execution (trace_id, span_id) seen per decision-token jti: replay detection
    binding_checks  the binding outcome per executed span, so a re-sent span gets the same answer once

Imports governance's pure modules and otlp_receiver's store; never server/ or litestar.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from sqlite_utils import Database

from governance.approvals import Approval, ApprovalContext
from governance.policy import Policy, parse_policy, policy_to_dict
from otlp_receiver.chain import canonical_json
from otlp_receiver.errors import ConflictError, InvalidInputError, NotFoundError
from otlp_receiver.store import cursor as _cursor
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex

APPROVAL_STATUSES = ("pending", "approved", "denied", "expired")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An audit record to write in the same transaction as a state change."""

    actor: str
    action: str
    target: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def _audit(db: Database, index: RunIndex, tenant_id: str, entry: AuditEntry) -> None:
    AuditLog(index).append(tenant_id, actor=entry.actor, action=entry.action, target=entry.target,
                           details=entry.details, db=db)


# ---------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """One stored policy version. ``document`` is the canonical JSON of ``policy_to_dict``."""

    policy_id: str
    tenant_id: str
    project_id: str
    version: int
    active: bool
    document: str
    source: str
    content_type: str
    sha256: str
    description: str | None
    rule_count: int
    created_ns: int
    created_by: str
    activated_ns: int | None = None
    activated_by: str | None = None

    def to_policy(self) -> Policy:
        """The evaluable policy (re-validated from the stored canonical document)."""
        return parse_policy(self.document, content_type="json")


def _policy_from_row(row: Mapping[str, Any]) -> PolicyRecord:
    return PolicyRecord(**{name: row[name] for name in PolicyRecord.__slots__ if name != "active"},
                        active=bool(row["active"]))


def create_policy(index: RunIndex, *, tenant_id: str, project_id: str, policy: Policy, source: str,
                  content_type: str, actor: str) -> PolicyRecord:
    """Store ``policy`` as the project's next version (inactive); audited ``policy.create``."""
    document = canonical_json(policy_to_dict(policy)).decode()
    row: dict[str, Any] = {
        "policy_id": str(uuid.uuid4()), "tenant_id": tenant_id, "project_id": project_id,
        "document": document, "source": source, "content_type": content_type,
        "sha256": hashlib.sha256(document.encode()).hexdigest(), "description": policy.description,
        "rule_count": len(policy.rules), "created_ns": time.time_ns(), "created_by": actor, "active": 0,
        "activated_ns": None, "activated_by": None}
    with index.transaction() as db:
        last = list(db.query("SELECT max(version) AS v FROM policies WHERE tenant_id = ? AND project_id = ?",
                             [tenant_id, project_id]))
        row["version"] = (last[0]["v"] or 0) + 1
        db.table("policies").insert(row)
        _audit(db, index, tenant_id, AuditEntry(actor, "policy.create", row["policy_id"], {
            "project_id": project_id, "version": row["version"], "sha256": row["sha256"]}))
    return _policy_from_row(row)


def activate_policy(index: RunIndex, *, tenant_id: str, project_id: str, policy_id: str,
                    actor: str) -> PolicyRecord:
    """Make ``policy_id`` the project's only active version; audited ``policy.activate``.

    Raises:
        NotFoundError: no such policy in this tenant and project.
    """
    with index.transaction() as db:
        rows = list(db.query("SELECT * FROM policies WHERE tenant_id = ? AND project_id = ? AND policy_id = ?",
                             [tenant_id, project_id, policy_id]))
        if not rows:
            raise NotFoundError(f"policy {policy_id} not found")
        previous = list(db.query("SELECT policy_id, version FROM policies WHERE tenant_id = ? AND project_id = ? "
                                 "AND active = 1", [tenant_id, project_id]))
        now = time.time_ns()
        db.execute("UPDATE policies SET active = 0 WHERE tenant_id = ? AND project_id = ? AND active = 1",
                   [tenant_id, project_id])
        db.execute("UPDATE policies SET active = 1, activated_ns = ?, activated_by = ? WHERE policy_id = ?",
                   [now, actor, policy_id])
        _audit(db, index, tenant_id, AuditEntry(actor, "policy.activate", policy_id, {
            "project_id": project_id, "version": rows[0]["version"],
            "previous_version": previous[0]["version"] if previous else None}))
    return replace(_policy_from_row(rows[0]), active=True, activated_ns=now, activated_by=actor)


def list_policies(index: RunIndex, tenant_id: str, project_id: str) -> list[PolicyRecord]:
    """Every version of the project's policy, newest first."""
    rows = index.query("SELECT * FROM policies WHERE tenant_id = ? AND project_id = ? ORDER BY version DESC",
                       [tenant_id, project_id])
    return [_policy_from_row(r) for r in rows]


def get_policy(index: RunIndex, tenant_id: str, project_id: str, policy_id: str) -> PolicyRecord | None:
    """One version of the project's policy, or None."""
    rows = index.query("SELECT * FROM policies WHERE tenant_id = ? AND project_id = ? AND policy_id = ?",
                       [tenant_id, project_id, policy_id])
    return _policy_from_row(rows[0]) if rows else None


def active_policy(index: RunIndex, tenant_id: str, project_id: str) -> PolicyRecord | None:
    """The project's active version, or None when it has none."""
    rows = index.query("SELECT * FROM policies WHERE tenant_id = ? AND project_id = ? AND active = 1",
                       [tenant_id, project_id])
    return _policy_from_row(rows[0]) if rows else None


# ---------------------------------------------------------------- kill switch


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """A tenant's kill switch for external writes (off when never set)."""

    enabled: bool = False
    reason: str | None = None
    updated_ns: int | None = None
    updated_by: str | None = None


def get_kill_switch(index: RunIndex, tenant_id: str) -> KillSwitch:
    """The tenant's kill switch."""
    rows = index.query("SELECT * FROM kill_switches WHERE tenant_id = ?", [tenant_id])
    if not rows:
        return KillSwitch()
    row = rows[0]
    return KillSwitch(bool(row["enabled"]), row["reason"], row["updated_ns"], row["updated_by"])


def set_kill_switch(index: RunIndex, tenant_id: str, *, enabled: bool, reason: str | None,
                    actor: str) -> KillSwitch:
    """Flip the tenant's kill switch; audited ``kill_switch.enable`` / ``kill_switch.disable``."""
    state = KillSwitch(enabled, reason, time.time_ns(), actor)
    with index.transaction() as db:
        db.execute("INSERT INTO kill_switches (tenant_id, enabled, reason, updated_ns, updated_by) "
                   "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id) DO UPDATE SET enabled = excluded.enabled, "
                   "reason = excluded.reason, updated_ns = excluded.updated_ns, updated_by = excluded.updated_by",
                   [tenant_id, int(enabled), reason, state.updated_ns, actor])
        action = "kill_switch.enable" if enabled else "kill_switch.disable"
        _audit(db, index, tenant_id, AuditEntry(actor, action, tenant_id, {"reason": reason}))
    return state


# ---------------------------------------------------------------- decisions and approvals


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """A stored approval and, once approved, the DecisionToken issued for it (issued once)."""

    approval: Approval
    token: str | None = None
    token_id: str | None = None


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _approval_row(record: ApprovalRecord) -> dict[str, Any]:
    a = record.approval
    return {
        "approval_id": a.id, "tenant_id": a.tenant, "project_id": a.project, "tool": a.tool,
        "args": _json(dict(a.args)), "trace_id": a.trace_id, "span_id": a.span_id,
        "requested_by": a.requested_by, "context": _json(a.context.to_dict()), "status": a.status,
        "created_ns": a.created_ns, "expires_ns": a.expires_ns, "agent": a.agent, "environment": a.environment,
        "action_class": a.action_class, "autonomy_level": a.autonomy_level, "policy_version": a.policy_version,
        "rule_id": a.rule_id, "reason_code": a.reason_code, "decided_by": a.decided_by,
        "decided_ns": a.decided_ns, "reason": a.reason,
        "edited_args": _json(dict(a.edited_args)) if a.edited_args is not None else None,
        "token": record.token, "token_id": record.token_id,
    }


def _approval_from_row(row: Mapping[str, Any]) -> ApprovalRecord:
    approval = Approval(
        id=row["approval_id"], tenant=row["tenant_id"], project=row["project_id"], tool=row["tool"],
        args=orjson.loads(row["args"]), trace_id=row["trace_id"], span_id=row["span_id"],
        requested_by=row["requested_by"], context=ApprovalContext.from_dict(orjson.loads(row["context"])),
        status=row["status"], created_ns=row["created_ns"], expires_ns=row["expires_ns"], agent=row["agent"],
        environment=row["environment"], action_class=row["action_class"], autonomy_level=row["autonomy_level"],
        policy_version=row["policy_version"], rule_id=row["rule_id"], reason_code=row["reason_code"],
        decided_by=row["decided_by"], decided_ns=row["decided_ns"], reason=row["reason"],
        edited_args=orjson.loads(row["edited_args"]) if row["edited_args"] is not None else None)
    return ApprovalRecord(approval, row["token"], row["token_id"])


def record_decision(index: RunIndex, tenant_id: str, *, audit: AuditEntry,
                    approval: Approval | None = None) -> None:
    """Audit a decision and, for require_approval, store its pending approval (one transaction)."""
    with index.transaction() as db:
        if approval is not None:
            db.table("approvals").insert(_approval_row(ApprovalRecord(approval)))
        _audit(db, index, tenant_id, audit)


def append_audits(index: RunIndex, entries: Sequence[tuple[str, AuditEntry]]) -> None:
    """Append a batch of (tenant_id, entry) audit records in one transaction."""
    with index.transaction() as db:
        for tenant_id, entry in entries:
            _audit(db, index, tenant_id, entry)


def get_approval(index: RunIndex, tenant_id: str, approval_id: str) -> ApprovalRecord | None:
    """One approval of this tenant, or None (another tenant's id is simply not found)."""
    rows = index.query("SELECT * FROM approvals WHERE tenant_id = ? AND approval_id = ?", [tenant_id, approval_id])
    return _approval_from_row(rows[0]) if rows else None


Transition = Callable[[ApprovalRecord], ApprovalRecord]


def update_approval(index: RunIndex, tenant_id: str, approval_id: str, transition: Transition, *,
                    audit: Callable[[ApprovalRecord], AuditEntry]) -> ApprovalRecord:
    """Read, transition (a pure function that may raise) and write one approval, with its audit record.

    The read happens inside the write transaction, so two approvers racing on the same
    approval are serialised: the second sees the first's outcome and gets a ConflictError.

    Raises:
        NotFoundError: no such approval in this tenant.
    """
    with index.transaction() as db:
        rows = list(db.query("SELECT * FROM approvals WHERE tenant_id = ? AND approval_id = ?",
                             [tenant_id, approval_id]))
        if not rows:
            raise NotFoundError(f"approval {approval_id} not found")
        current = _approval_from_row(rows[0])
        updated = transition(current)
        row = _approval_row(updated)
        changes = {k: row[k] for k in ("status", "decided_by", "decided_ns", "reason", "edited_args", "token",
                                       "token_id")}
        cursor = db.execute(f"UPDATE approvals SET {', '.join(f'{k} = :{k}' for k in changes)} "
                            "WHERE tenant_id = :tenant_id AND approval_id = :approval_id AND status = 'pending'",
                            {**changes, "tenant_id": tenant_id, "approval_id": approval_id})
        if cursor.rowcount != 1:
            raise ConflictError(f"approval {approval_id} is already {current.approval.status}")
        _audit(db, index, tenant_id, audit(updated))
    return updated


@dataclass(frozen=True, slots=True)
class ApprovalFilters:
    """Filters of the approvals list; every field is optional. ``run`` is the run (trace) id."""

    status: str | None = None
    tool: str | None = None
    agent: str | None = None
    run: str | None = None
    project: str | None = None


def list_approvals(index: RunIndex, tenant_id: str, filters: ApprovalFilters, *, limit: int,
                   cursor: str | None = None) -> tuple[list[ApprovalRecord], str | None]:
    """A page of approvals, newest first, and the next page's cursor (keyset over created_ns, id)."""
    if filters.status is not None and filters.status not in APPROVAL_STATUSES:
        raise InvalidInputError(f"unknown status {filters.status!r}",
                                details={"status": "one of " + ", ".join(APPROVAL_STATUSES)})
    where: list[str] = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
    for column, value in (("status", filters.status), ("tool", filters.tool), ("agent", filters.agent),
                          ("trace_id", filters.run), ("project_id", filters.project)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if cursor:
        where.append("(created_ns, approval_id) < (?, ?)")
        params.extend(_cursor.decode_ns_key(cursor))
    rows = index.query(f"SELECT * FROM approvals WHERE {' AND '.join(where)} "
                       "ORDER BY created_ns DESC, approval_id DESC LIMIT ?", [*params, limit + 1])
    page = [_approval_from_row(r) for r in rows[:limit]]
    last = page[-1].approval if page else None
    next_cursor = _cursor.encode_cursor(last.created_ns, last.id) if last and len(rows) > limit else None
    return page, next_cursor


def overdue_approvals(index: RunIndex, now_ns: int, *, limit: int = 200) -> list[tuple[str, str]]:
    """(tenant_id, approval_id) of pending approvals past their deadline, oldest deadline first."""
    rows = index.query("SELECT tenant_id, approval_id FROM approvals WHERE status = 'pending' AND expires_ns <= ? "
                       "ORDER BY expires_ns LIMIT ?", [now_ns, limit])
    return [(r["tenant_id"], r["approval_id"]) for r in rows]


# ---------------------------------------------------------------- binding


@dataclass(frozen=True, slots=True)
class BindingRecord:
    """The binding outcome of one executed span; ``first`` is False when the span was checked before."""

    binding: str
    jti: str | None
    first: bool


SeenJti = Callable[[str], bool]
BindingCheck = Callable[[SeenJti], tuple[str, str | None]]


def record_binding(index: RunIndex, *, tenant_id: str, trace_id: str, span_id: str, check: BindingCheck,
                   audit: Callable[[str, str | None], AuditEntry | None]) -> BindingRecord:
    """Check one executed span's binding exactly once, atomically with its jti use and audit record.

    ``check`` receives ``seen_jti(jti)``, which records that this span used ``jti`` and answers
    whether a *different* span used it first: an OTLP retry of the same span (same trace and
    span id) is therefore never "replayed". A span checked before gets its stored outcome back
    (``first=False``) so its side effects (violation step, audit) happen once.
    """
    with index.transaction() as db:
        rows = list(db.query("SELECT binding, jti FROM binding_checks WHERE tenant_id = ? AND trace_id = ? "
                             "AND span_id = ?", [tenant_id, trace_id, span_id]))
        if rows:
            return BindingRecord(rows[0]["binding"], rows[0]["jti"], first=False)
        now = time.time_ns()

        def seen_jti(jti: str) -> bool:
            db.execute("INSERT OR IGNORE INTO token_uses (tenant_id, jti, trace_id, span_id, used_ns) "
                       "VALUES (?, ?, ?, ?, ?)", [tenant_id, jti, trace_id, span_id, now])
            first = list(db.query("SELECT trace_id, span_id FROM token_uses WHERE tenant_id = ? AND jti = ?",
                                  [tenant_id, jti]))[0]
            return (first["trace_id"], first["span_id"]) != (trace_id, span_id)

        binding, jti = check(seen_jti)
        db.execute("INSERT INTO binding_checks (tenant_id, trace_id, span_id, binding, jti, checked_ns) "
                   "VALUES (?, ?, ?, ?, ?, ?)", [tenant_id, trace_id, span_id, binding, jti, now])
        entry = audit(binding, jti)
        if entry is not None:
            _audit(db, index, tenant_id, entry)
    return BindingRecord(binding, jti, first=True)


def prune_binding_state(index: RunIndex, *, before_ns: int) -> int:
    """Forget token uses and binding checks older than ``before_ns`` (past every token's expiry)."""
    with index.transaction() as db:
        uses = db.execute("DELETE FROM token_uses WHERE used_ns < ?", [before_ns]).rowcount
        checks = db.execute("DELETE FROM binding_checks WHERE checked_ns < ?", [before_ns]).rowcount
    return int(uses) + int(checks)
