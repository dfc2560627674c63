"""API keys: shown once, stored hashed, found by a public prefix, compared in constant time.

Format: ``tw_<prefix>_<secret>`` — 8 hex chars of public prefix (the lookup key) and 32
url-safe random bytes of secret. Only ``sha256(secret)`` is stored: the secrets are
high-entropy, so a fast hash suffices and no plaintext ever reaches disk.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from otlp_receiver.errors import AuthenticationError, InvalidInputError
from otlp_receiver.store.index import RunIndex

ROLES = ("ingest", "viewer", "approver", "admin")
_PREFIX_LEN = 8


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


class KeyStore:
    """The api_keys table."""

    def __init__(self, index: RunIndex) -> None:
        self.index = index

    def create(self, *, tenant_id: str, project_id: str, role: str, name: str = "",
               key_text: str | None = None, expires_ns: int | None = None) -> tuple[str, KeyRecord]:
        """Create a key; returns the full key text (shown once) and its record."""
        if role not in ROLES:
            raise InvalidInputError(f"unknown role {role!r}", details={"role": f"one of {', '.join(ROLES)}"})
        key_text = key_text or new_key_text()
        prefix, secret = split_key(key_text)
        record = KeyRecord(str(uuid.uuid4()), prefix, tenant_id, project_id, role, name, time.time_ns(),
                           None, expires_ns)
        with self.index.transaction() as db:
            db["api_keys"].insert({**_record_dict(record), "secret_hash": _hash(secret)})
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
        if record.revoked_ns is not None and record.revoked_ns <= time.time_ns():
            raise AuthenticationError("API key revoked")
        if record.expires_ns is not None and record.expires_ns <= time.time_ns():
            raise AuthenticationError("API key expired")
        return record

    def _row(self, prefix: str) -> dict[str, Any] | None:
        rows = self.index.query("SELECT * FROM api_keys WHERE prefix = ?", [prefix])
        return rows[0] if rows else None


def _record_dict(record: KeyRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in KeyRecord.__slots__}


def _from_row(row: dict[str, Any]) -> KeyRecord:
    return KeyRecord(**{f: row[f] for f in KeyRecord.__slots__})
