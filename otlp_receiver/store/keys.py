"""API keys: shown once, stored hashed, found by a public prefix, compared in constant time.

Format: ``tw_<prefix>_<secret>`` — 8 hex chars of public prefix (the lookup key) and 32
url-safe random bytes of secret. Only ``sha256(secret)`` is stored: the secrets are
high-entropy, so a fast hash suffices and no plaintext ever reaches disk.

Lifecycle: create → (rotate: a new key is made and the old one keeps working until the end of
a grace period, then fails as expired) → revoke (immediate). Every write method takes an
optional ``db`` so the caller can put the change and its audit record in one transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from sqlite_utils import Database

from otlp_receiver.errors import AuthenticationError, ConflictError, InvalidInputError, NotFoundError
from otlp_receiver.store import cursor as _cursor
from otlp_receiver.store.index import RunIndex

ROLES = ("ingest", "viewer", "approver", "admin")
_PREFIX_LEN = 8
_TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored key, without its secret."""

    key_id: str
    prefix: str
    tenant_id: str
    project_id: str
    role: str
    name: str
    created_ns: int
    revoked_ns: int | None
    expires_ns: int | None
    rotated_to: str | None = None
    rate_limit_per_min: int | None = None
    created_by: str | None = None

    def state(self, now_ns: int) -> str:
        """``active``, ``rotating`` (rotated, inside its grace period), ``revoked`` or ``expired``."""
        if self.revoked_ns is not None and self.revoked_ns <= now_ns:
            return "revoked"
        if self.expires_ns is not None and self.expires_ns <= now_ns:
            return "expired"
        return "rotating" if self.rotated_to else "active"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def split_key(key: str) -> tuple[str, str]:
    """``tw_<prefix>_<secret>`` → (prefix, secret); anything else is an authentication error."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "tw" or len(parts[1]) != _PREFIX_LEN or not parts[2]:
        raise AuthenticationError("malformed API key")
    return parts[1], parts[2]


def new_key_text() -> str:
    """A fresh random key in the ``tw_<prefix>_<secret>`` format."""
    return f"tw_{secrets.token_hex(_PREFIX_LEN // 2)}_{secrets.token_urlsafe(32)}"


def check_tenant_id(tenant_id: str) -> str:
    """Tenant ids are 1-64 of ``[A-Za-z0-9._-]`` (they name storage partitions and appear in predicates)."""
    if not _TENANT_ID.match(tenant_id):
        raise InvalidInputError(f"invalid tenant id {tenant_id!r}",
                                details={"tenant_id": "1-64 characters of A-Z a-z 0-9 . _ - (not starting with . _ -)"})
    return tenant_id


class KeyStore:
    """The api_keys table."""

    def __init__(self, index: RunIndex) -> None:
        self.index = index

    def create(self, *, tenant_id: str, project_id: str, role: str, name: str = "",
               key_text: str | None = None, expires_ns: int | None = None, rate_limit_per_min: int | None = None,
               created_by: str | None = None, db: Database | None = None) -> tuple[str, KeyRecord]:
        """Create a key; returns the full key text (shown once) and its record."""
        if role not in ROLES:
            raise InvalidInputError(f"unknown role {role!r}", details={"role": f"one of {', '.join(ROLES)}"})
        check_tenant_id(tenant_id)
        if rate_limit_per_min is not None and rate_limit_per_min <= 0:
            raise InvalidInputError("rate_limit_per_min must be positive", details={"rate_limit_per_min": "> 0"})
        key_text = key_text or new_key_text()
        prefix, secret = split_key(key_text)
        record = KeyRecord(str(uuid.uuid4()), prefix, tenant_id, project_id, role, name, time.time_ns(),
                           None, expires_ns, None, rate_limit_per_min, created_by)
        row = {**_record_dict(record), "secret_hash": _hash(secret)}
        if db is not None:
            db.table("api_keys").insert(row)
        else:
            with self.index.transaction() as tx:
                tx.table("api_keys").insert(row)
        return key_text, record

    def ensure(self, key_text: str, *, tenant_id: str, project_id: str, role: str, name: str) -> KeyRecord:
        """Make sure a given key exists (bootstrap keys from configuration); idempotent."""
        prefix, secret = split_key(key_text)
        row = self._row(prefix)
        if row is not None:
            if not hmac.compare_digest(row["secret_hash"], _hash(secret)):
                raise AuthenticationError("bootstrap key prefix collides with a different key")
            return _from_row(row)
        return self.create(tenant_id=tenant_id, project_id=project_id, role=role, name=name,
                           key_text=key_text)[1]

    def authenticate(self, key_text: str) -> KeyRecord:
        """The record of a valid, unrevoked, unexpired key; AuthenticationError otherwise."""
        prefix, secret = split_key(key_text)
        row = self._row(prefix)
        expected = row["secret_hash"] if row else _hash("\x00absent")
        if not hmac.compare_digest(expected, _hash(secret)) or row is None:
            raise AuthenticationError("invalid API key")
        record = _from_row(row)
        state = record.state(time.time_ns())
        if state == "revoked":
            raise AuthenticationError("API key revoked")
        if state == "expired":
            raise AuthenticationError("API key expired" + (" (rotated; use its replacement)" if record.rotated_to
                                                           else ""))
        return record

    # -- administration (always within one tenant) -----------------------------------------------------------

    def get(self, tenant_id: str, key_id: str) -> KeyRecord:
        """One key of this tenant; NotFoundError for an unknown key or another tenant's."""
        rows = self.index.query("SELECT * FROM api_keys WHERE tenant_id = ? AND key_id = ?", [tenant_id, key_id])
        if not rows:
            raise NotFoundError(f"key {key_id} not found")
        return _from_row(rows[0])

    def list_keys(self, tenant_id: str, *, include_inactive: bool = False, limit: int = 100,
             cursor: str | None = None) -> tuple[list[KeyRecord], str | None]:
        """A page of the tenant's keys, newest first (no secrets), and the next cursor."""
        where: list[str] = ["tenant_id = ?"]
        params: list[Any] = [tenant_id]
        if not include_inactive:
            now = time.time_ns()
            where.append("(revoked_ns IS NULL OR revoked_ns > ?) AND (expires_ns IS NULL OR expires_ns > ?)")
            params.extend([now, now])
        if cursor:
            where.append("(created_ns, key_id) < (?, ?)")
            params.extend(_cursor.decode_ns_key(cursor))
        rows = self.index.query(f"SELECT * FROM api_keys WHERE {' AND '.join(where)} "
                                "ORDER BY created_ns DESC, key_id DESC LIMIT ?", [*params, limit + 1])
        records = [_from_row(r) for r in rows[:limit]]
        next_cursor = _cursor.encode_cursor(records[-1].created_ns, records[-1].key_id) if len(rows) > limit else None
        return records, next_cursor

    def count_active(self, tenant_id: str, *, role: str | None = None) -> int:
        """How many usable keys the tenant has (optionally of one role)."""
        now = time.time_ns()
        sql = ("SELECT count(*) AS n FROM api_keys WHERE tenant_id = ? AND (revoked_ns IS NULL OR revoked_ns > ?) "
               "AND (expires_ns IS NULL OR expires_ns > ?)")
        params: list[Any] = [tenant_id, now, now]
        if role is not None:
            sql += " AND role = ?"
            params.append(role)
        return int(self.index.query(sql, params)[0]["n"])

    def revoke(self, tenant_id: str, key_id: str, *, db: Database) -> KeyRecord:
        """Revoke now (idempotent: an already revoked key keeps its first revocation time)."""
        record = self._get_in(db, tenant_id, key_id)
        if record.revoked_ns is not None and record.revoked_ns <= time.time_ns():
            return record
        now = time.time_ns()
        db.execute("UPDATE api_keys SET revoked_ns = ? WHERE key_id = ?", [now, key_id])
        return replace(record, revoked_ns=now)

    def rotate(self, tenant_id: str, key_id: str, *, grace_s: float, created_by: str | None,
               db: Database) -> tuple[str, KeyRecord, KeyRecord]:
        """Make a replacement key; the old one stays valid for ``grace_s`` more seconds, then expires.

        Returns (new key text, new record, old record as updated). Revoked, expired or already rotated
        keys cannot be rotated (ConflictError): create a new key instead.
        """
        if grace_s < 0:
            raise InvalidInputError("grace_s must be >= 0", details={"grace_s": ">= 0"})
        old = self._get_in(db, tenant_id, key_id)
        now = time.time_ns()
        if old.state(now) != "active":
            raise ConflictError(f"key {key_id} is {old.state(now)}; only active keys can be rotated")
        text, new = self.create(tenant_id=old.tenant_id, project_id=old.project_id, role=old.role, name=old.name,
                                rate_limit_per_min=old.rate_limit_per_min, created_by=created_by, db=db)
        until = now + int(grace_s * 1e9)
        expires = until if old.expires_ns is None else min(old.expires_ns, until)
        db.execute("UPDATE api_keys SET expires_ns = ?, rotated_to = ? WHERE key_id = ?", [expires, new.key_id, key_id])
        return text, new, replace(old, expires_ns=expires, rotated_to=new.key_id)

    def _get_in(self, db: Database, tenant_id: str, key_id: str) -> KeyRecord:
        rows = list(db.query("SELECT * FROM api_keys WHERE tenant_id = ? AND key_id = ?", [tenant_id, key_id]))
        if not rows:
            raise NotFoundError(f"key {key_id} not found")
        return _from_row(rows[0])

    def _row(self, prefix: str) -> dict[str, Any] | None:
        rows = self.index.query("SELECT * FROM api_keys WHERE prefix = ?", [prefix])
        return rows[0] if rows else None


def key_to_json(record: KeyRecord, *, now_ns: int | None = None) -> dict[str, Any]:
    """The public view of a key: everything but the secret (and its hash)."""
    now = time.time_ns() if now_ns is None else now_ns
    return {**_record_dict(record), "state": record.state(now), "display": f"tw_{record.prefix}_…"}


def _record_dict(record: KeyRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in KeyRecord.__slots__}


def _from_row(row: dict[str, Any]) -> KeyRecord:
    fields: dict[str, Any] = {f: row.get(f) for f in KeyRecord.__slots__}
    return KeyRecord(**fields)


