"""Administration API (role admin, always within the caller's own tenant): keys, audit log, retention, tenant.

Keys:       POST /v1/admin/keys (secret shown once) · GET /v1/admin/keys · GET /v1/admin/keys/{key_id}
            POST /v1/admin/keys/{key_id}:revoke (immediate) · POST /v1/admin/keys/{key_id}:rotate (grace period)
Audit:      GET /v1/audit (filters, cursor; the read is itself audited) · GET /v1/audit/verify
Retention:  GET|PUT /v1/admin/retention · POST /v1/admin/retention:run
Tenant:     GET /v1/admin/tenant · DELETE /v1/admin/tenant-data?confirm=<tenant_id>
Backup:     POST /v1/admin/backup (operator tenant only; written under TRACEWARD_BACKUP_DIR: server/backup.py)
Every change is written to the audit log in the same transaction as the change itself.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.params import Parameter

from otlp_receiver.errors import InvalidInputError, NotFoundError
from otlp_receiver.store.keys import ROLES, KeyRecord, key_to_json
from server.auth import Principal, current_principal
from server.runtime import Runtime
from server.schemas import parse_time, rfc3339

ADMIN = {"permission": "admin"}
MAX_RETENTION_DAYS = 3650


class CreateKey(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/admin/keys."""

    role: str
    name: str = ""
    project_id: str | None = None
    expires_at: str | None = None
    rate_limit_per_min: int | None = None


class RotateKey(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/admin/keys/{key_id}:rotate."""

    grace_s: float | None = None


class BackupRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/admin/backup: the backup's name under TRACEWARD_BACKUP_DIR (default: made from the time)."""

    name: str | None = None


class RetentionPlan(msgspec.Struct, forbid_unknown_fields=True):
    """PUT /v1/admin/retention (null = back to the server default)."""

    retention_days: int | None


class KeysController(Controller):
    """API keys of the caller's tenant."""

    path = "/v1/admin/keys"
    tags = ["admin"]

    @post("/", summary="Create an API key (the key text is shown only in this response)", opt=ADMIN,
          sync_to_thread=True, status_code=201)
    def create_key(self, request: Request[Any, Any, Any], runtime: Runtime, data: CreateKey) -> dict[str, Any]:
        """Create a key of any role for this tenant; ingest keys belong to ``project_id`` (default project)."""
        principal = current_principal(request)
        if data.role not in ROLES:
            raise InvalidInputError(f"unknown role {data.role!r}", details={"role": f"one of {', '.join(ROLES)}"})
        if len(data.name) > 200:
            raise InvalidInputError("name: at most 200 characters", details={"name": "too long"})
        expires = parse_time(data.expires_at, field="expires_at") if data.expires_at else None
        project = data.project_id or runtime.settings.default_project
        with runtime.index.transaction() as db:
            text, record = runtime.keys.create(tenant_id=principal.tenant_id, project_id=project, role=data.role,
                                               name=data.name, expires_ns=expires, created_by=principal.actor,
                                               rate_limit_per_min=data.rate_limit_per_min, db=db)
            runtime.audit.append(principal.tenant_id, actor=principal.actor, action="key.create",
                                 target=record.key_id, details=_key_details(record), db=db)
        return {"key": text, **key_to_json(record)}

    @get("/", summary="List API keys (never their secrets)", opt=ADMIN, sync_to_thread=True)
    def list_keys(self, request: Request[Any, Any, Any], runtime: Runtime, include_inactive: bool = False,
                  limit: Annotated[int, Parameter(ge=1, le=500)] = 100, cursor: str | None = None) -> dict[str, Any]:
        """Newest first; revoked and expired keys only with ``include_inactive=true``."""
        keys, next_cursor = runtime.keys.list_keys(current_principal(request).tenant_id,
                                                   include_inactive=include_inactive, limit=limit, cursor=cursor)
        now = time.time_ns()
        return {"keys": [key_to_json(k, now_ns=now) for k in keys], "next_cursor": next_cursor}

    @get("/{key_id:str}", summary="Get one API key (without its secret)", opt=ADMIN, sync_to_thread=True)
    def get_key(self, request: Request[Any, Any, Any], runtime: Runtime, key_id: str) -> dict[str, Any]:
        """The key's record and state."""
        return key_to_json(runtime.keys.get(current_principal(request).tenant_id, key_id))

    @post("/{key_action:str}", summary="Revoke (POST /v1/admin/keys/{key_id}:revoke) or rotate "
          "(POST /v1/admin/keys/{key_id}:rotate) an API key", opt=ADMIN, sync_to_thread=True, status_code=200)
    def key_action(self, request: Request[Any, Any, Any], runtime: Runtime, key_action: str,
                   data: RotateKey | None = None) -> dict[str, Any]:
        """``:revoke`` takes effect at once; ``:rotate`` returns a new key and keeps the old one valid for
        ``grace_s`` seconds (default TRACEWARD_KEY_ROTATION_GRACE_S)."""
        principal = current_principal(request)
        key_id, sep, verb = key_action.rpartition(":")
        if not sep or verb not in ("revoke", "rotate"):
            raise NotFoundError(f"no such action {key_action!r}: use {{key_id}}:revoke or {{key_id}}:rotate")
        if verb == "revoke":
            return _revoke(runtime, principal, key_id)
        grace = data.grace_s if data and data.grace_s is not None else runtime.settings.key_rotation_grace_s
        return _rotate(runtime, principal, key_id, grace)


def _revoke(runtime: Runtime, principal: Principal, key_id: str) -> dict[str, Any]:
    with runtime.index.transaction() as db:
        record = runtime.keys.revoke(principal.tenant_id, key_id, db=db)
        runtime.audit.append(principal.tenant_id, actor=principal.actor, action="key.revoke", target=key_id,
                             details=_key_details(record), db=db)
    return key_to_json(record)


def _rotate(runtime: Runtime, principal: Principal, key_id: str, grace_s: float) -> dict[str, Any]:
    if not 0 <= grace_s <= 90 * 86_400:
        raise InvalidInputError("grace_s must be between 0 and 90 days", details={"grace_s": "0..7776000"})
    with runtime.index.transaction() as db:
        text, new, old = runtime.keys.rotate(principal.tenant_id, key_id, grace_s=grace_s,
                                             created_by=principal.actor, db=db)
        runtime.audit.append(principal.tenant_id, actor=principal.actor, action="key.rotate", target=key_id,
                             details={**_key_details(old), "new_key_id": new.key_id, "grace_s": grace_s}, db=db)
    return {"key": text, **key_to_json(new), "replaces": key_to_json(old)}


def _key_details(record: KeyRecord) -> dict[str, Any]:
    return {"role": record.role, "project_id": record.project_id, "name": record.name, "prefix": record.prefix,
            "expires_ns": record.expires_ns, "revoked_ns": record.revoked_ns,
            "rate_limit_per_min": record.rate_limit_per_min}


class AuditController(Controller):
    """The tenant's hash-chained audit log."""

    path = "/v1/audit"
    tags = ["admin"]

    @get("/", summary="Read the audit log, newest first (this read is itself audited)", opt=ADMIN,
         sync_to_thread=True)
    def list_audit(
        self, request: Request[Any, Any, Any], runtime: Runtime,
        action: Annotated[str | None, Parameter(description="action prefix, e.g. 'key.'")] = None,
        actor: str | None = None,
        since: Annotated[str | None, Parameter(description="RFC 3339 or ns, inclusive")] = None,
        until: Annotated[str | None, Parameter(description="RFC 3339 or ns, exclusive")] = None,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100, cursor: str | None = None,
    ) -> dict[str, Any]:
        """Cursor-paged by (ts, id) descending: pages stay stable while new rows are appended."""
        principal = current_principal(request)
        since_ns = parse_time(since, field="since") if since else None
        until_ns = parse_time(until, field="until") if until else None
        rows, next_cursor = runtime.audit.list(principal.tenant_id, action_prefix=action, actor=actor,
                                               since_ns=since_ns, until_ns=until_ns, limit=limit, cursor=cursor)
        filters = {"action": action, "actor": actor, "since_ns": since_ns, "until_ns": until_ns, "cursor": cursor}
        runtime.audit.append(principal.tenant_id, actor=principal.actor, action="audit.read",
                             details={k: v for k, v in filters.items() if v is not None} | {"returned": len(rows)})
        return {"entries": [_audit_to_json(r) for r in rows], "next_cursor": next_cursor}

    @get("/verify", summary="Verify the tenant's audit hash chain", opt=ADMIN, sync_to_thread=True)
    def verify_audit(self, request: Request[Any, Any, Any], runtime: Runtime) -> dict[str, Any]:
        """Recompute the chain; a failure is itself recorded as ``audit.verification_failed``."""
        principal = current_principal(request)
        verdict = runtime.audit.verify(principal.tenant_id)
        result = {"ok": verdict.ok, "rows_checked": verdict.rows_checked, "first_bad_id": verdict.first_bad_id,
                  "reason": verdict.reason}
        if not verdict.ok:
            runtime.audit.append(principal.tenant_id, actor=principal.actor, action="audit.verification_failed",
                                 details=result)
        return result


def _audit_to_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "ts": rfc3339(row["ts_ns"]), "ts_ns": row["ts_ns"], "actor": row["actor"],
            "action": row["action"], "target": row["target"], "details": row["details"],
            "prev_hash": row["prev_hash"], "row_hash": row["row_hash"]}


class AdminController(Controller):
    """The tenant itself: retention plan, on-demand retention, data deletion."""

    path = "/v1/admin"
    tags = ["admin"]

    @get("/tenant", summary="The caller's tenant: counts and plan", opt=ADMIN, sync_to_thread=True)
    def get_tenant(self, request: Request[Any, Any, Any], runtime: Runtime) -> dict[str, Any]:
        """Runs stored, usable keys per role, and the retention plan."""
        tenant = current_principal(request).tenant_id
        keys = {role: runtime.keys.count_active(tenant, role=role) for role in ROLES}
        return {"tenant_id": tenant, "runs": runtime.index.count_runs(tenant), "active_keys": keys,
                "retention": runtime.retention.plan(tenant)}

    @get("/retention", summary="The tenant's retention plan", opt=ADMIN, sync_to_thread=True)
    def get_retention(self, request: Request[Any, Any, Any], runtime: Runtime) -> dict[str, Any]:
        """Run/step retention (the tenant's own or the default) and the audit-log retention."""
        return runtime.retention.plan(current_principal(request).tenant_id)

    @put("/retention", summary="Set the tenant's run/step retention in days (null = server default)", opt=ADMIN,
         sync_to_thread=True)
    def set_retention(self, request: Request[Any, Any, Any], runtime: Runtime, data: RetentionPlan) -> dict[str, Any]:
        """Takes effect at the next retention pass (POST /v1/admin/retention:run to apply it now)."""
        principal = current_principal(request)
        days = data.retention_days
        if days is not None and not 1 <= days <= MAX_RETENTION_DAYS:
            raise InvalidInputError(f"retention_days must be 1..{MAX_RETENTION_DAYS}",
                                    details={"retention_days": f"1..{MAX_RETENTION_DAYS} or null"})
        with runtime.index.transaction() as db:
            runtime.retention.plans.set(principal.tenant_id, days, actor=principal.actor, db=db)
            runtime.audit.append(principal.tenant_id, actor=principal.actor, action="retention.plan_set",
                                 details={"retention_days": days}, db=db)
        return runtime.retention.plan(principal.tenant_id)

    @post("/retention:run", summary="Apply the retention plan now (hard delete, tombstones in the audit log)",
          opt=ADMIN, sync_to_thread=True, status_code=200)
    def run_retention(self, request: Request[Any, Any, Any], runtime: Runtime) -> dict[str, Any]:
        """Deletes the tenant's expired runs and steps from both stores; returns what was deleted."""
        principal = current_principal(request)
        return runtime.retention.run_tenant(principal.tenant_id, actor=principal.actor,
                                            trigger="manual")

    @delete("/tenant-data", summary="Delete ALL runs and steps of the tenant (confirm=<tenant_id>)", opt=ADMIN,
            sync_to_thread=True, status_code=200)
    def delete_tenant_data(self, request: Request[Any, Any, Any], runtime: Runtime,
                           confirm: Annotated[str, Parameter(description="the caller's tenant id")]) -> dict[str, Any]:
        """Hard delete with a tombstone per run; keys, plan and audit log are kept."""
        principal = current_principal(request)
        if confirm != principal.tenant_id:
            raise InvalidInputError("confirm must equal your tenant id", details={"confirm": "your tenant id"})
        return runtime.retention.delete_tenant_data(principal.tenant_id,
                                                    actor=principal.actor)

    @post("/backup", summary="Back up the whole data dir (every tenant) to a new directory under "
          "TRACEWARD_BACKUP_DIR (operator tenant's admins only)", opt=ADMIN, sync_to_thread=True, status_code=201)
    def create_backup(self, request: Request[Any, Any, Any], runtime: Runtime,
                      data: BackupRequest | None = None) -> dict[str, Any]:
        """Consistent while ingest goes on: every export acknowledged before this request is in it. Answers once
        the backup is complete: its path, the manifest's sha256, file count and bytes, and how long the flusher
        paused. Audited (``backup.create`` / ``backup.failed``)."""
        principal = current_principal(request)
        return runtime.backups.create(principal.tenant_id, principal.actor, data.name if data else None)
