"""The audit log: append-only, hash-chained per tenant, in the transactional store.

Each row stores ``prev_hash`` (the previous row of the same tenant, or the tenant's genesis
hash) and ``row_hash = sha256(prev_hash ‖ canonical_json(row fields))``. Editing, deleting or
reordering a row breaks the chain; :meth:`AuditLog.verify` reports the first broken row.
Rows older than the audit retention are pruned from the front of the chain; the last pruned
row's hash is kept in ``audit_anchors`` and verification starts from it.
Reads page with a keyset cursor over ``(ts_ns, id)``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlite_utils import Database

from otlp_receiver.chain import canonical_json
from otlp_receiver.store import cursor as _cursor
from otlp_receiver.store.index import RunIndex


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    """Result of verifying one tenant's audit chain."""

    ok: bool
    rows_checked: int
    first_bad_id: int | None = None
    reason: str | None = None


def audit_genesis(tenant_id: str) -> str:
    """The prev_hash of a tenant's first audit row."""
    return "sha256:" + hashlib.sha256(canonical_json({"kind": "traceward.audit_genesis",
                                                      "tenant_id": tenant_id})).hexdigest()


def _row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    fields = {k: row[k] for k in ("tenant_id", "ts_ns", "actor", "action", "target", "details")}
    return "sha256:" + hashlib.sha256(prev_hash.encode("ascii") + canonical_json(fields)).hexdigest()


class AuditLog:
    """Append and read the audit log (writes go through the index's single writer)."""

    def __init__(self, index: RunIndex) -> None:
        self.index = index

    def append(self, tenant_id: str, *, actor: str, action: str, target: str | None = None,
               details: Mapping[str, Any] | None = None, db: Database | None = None) -> dict[str, Any]:
        """Append one record; pass ``db`` to join a transaction already open on the writer."""
        if db is not None:
            return self._append(db, tenant_id, actor, action, target, details)
        with self.index.transaction() as tx:
            return self._append(tx, tenant_id, actor, action, target, details)

    def _append(self, db: Database, tenant_id: str, actor: str, action: str, target: str | None,
                details: Mapping[str, Any] | None) -> dict[str, Any]:
        last = list(db.query("SELECT row_hash FROM audit_log WHERE tenant_id = ? ORDER BY id DESC LIMIT 1",
                             [tenant_id]))
        if not last:  # a new chain, or every row pruned: continue from the pruning anchor if there is one
            last = list(db.query("SELECT last_hash AS row_hash FROM audit_anchors WHERE tenant_id = ?", [tenant_id]))
        prev = last[0]["row_hash"] if last else audit_genesis(tenant_id)
        row = {"tenant_id": tenant_id, "ts_ns": time.time_ns(), "actor": actor, "action": action,
               "target": target, "details": orjson.dumps(dict(details or {}), option=orjson.OPT_SORT_KEYS).decode()}
        row["prev_hash"] = prev
        row["row_hash"] = _row_hash(prev, row)
        cursor = db.execute("INSERT INTO audit_log (tenant_id, ts_ns, actor, action, target, details, prev_hash, "
                            "row_hash) VALUES (:tenant_id, :ts_ns, :actor, :action, :target, :details, :prev_hash, "
                            ":row_hash)", row)
        return {"id": cursor.lastrowid, **row}

    def list(self, tenant_id: str, *, action_prefix: str | None = None, actor: str | None = None,
             since_ns: int | None = None, until_ns: int | None = None, limit: int = 100,
             cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of records, newest first, and the next cursor."""
        where: list[str] = ["tenant_id = ?"]
        params: list[Any] = [tenant_id]
        if action_prefix is not None:
            where.append("action >= ? AND action < ?")
            params.extend([action_prefix, action_prefix + "\uffff"])
        for cond, value in (("actor = ?", actor), ("ts_ns >= ?", since_ns), ("ts_ns < ?", until_ns)):
            if value is not None:
                where.append(cond)
                params.append(value)
        if cursor:
            where.append("(ts_ns, id) < (?, ?)")
            params.extend(_cursor.decode_cursor(cursor, int, int))
        rows = self.index.query(f"SELECT * FROM audit_log WHERE {' AND '.join(where)} "
                                "ORDER BY ts_ns DESC, id DESC LIMIT ?", [*params, limit + 1])
        page = rows[:limit]
        next_cursor = _cursor.encode_cursor(page[-1]["ts_ns"], page[-1]["id"]) if len(rows) > limit else None
        return [{**r, "details": orjson.loads(r["details"])} for r in page], next_cursor

    def verify(self, tenant_id: str) -> AuditVerdict:
        """Recompute the tenant's chain in id order; report the first row that doesn't link or hash."""
        prev, after_id = self._anchor(tenant_id)
        count = 0
        for row in self.index.reader.query("SELECT * FROM audit_log WHERE tenant_id = ? AND id > ? ORDER BY id",
                                           [tenant_id, after_id]):
            count += 1
            if row["prev_hash"] != prev:
                return AuditVerdict(False, count, row["id"], "prev_hash does not link to the previous row")
            if _row_hash(prev, row) != row["row_hash"]:
                return AuditVerdict(False, count, row["id"], "row_hash mismatch: the row was edited")
            prev = row["row_hash"]
        return AuditVerdict(True, count)

    def _anchor(self, tenant_id: str) -> tuple[str, int]:
        """Where verification starts: genesis, or the hash of the last row pruned by audit retention."""
        rows = self.index.query("SELECT last_id, last_hash FROM audit_anchors WHERE tenant_id = ?", [tenant_id])
        return (rows[0]["last_hash"], rows[0]["last_id"]) if rows else (audit_genesis(tenant_id), 0)
