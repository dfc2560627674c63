"""Per-tenant redaction for the ingest pipeline.

Policy: the default rule set, then the operator's file (``TRACEWARD_REDACTION_FILE``, YAML or JSON):

    default: {rules: [...], disable: [rule_id, ...], override: {...}}   # applies to every tenant
    tenants:
      acme: {rules: [...], disable: [...]}                              # on top of `default`

Fingerprints (the ``[REDACTED:<rule>:<fp>]`` markers) use HMAC-SHA256 with a per-tenant key derived
from a master secret kept in ``<data dir>/redaction.key`` (created 0600 on first start), so the same
secret compares equal across runs of one tenant and different across tenants.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from otlp_receiver.errors import ConfigError
from otlp_receiver.model import RedactionMeta, Span
from otlp_receiver.redact import RedactionPolicy, Redactor


def load_master_key(path: Path) -> bytes:
    """Read the master secret, creating it (0600) on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) < 32:
        raise ConfigError(f"{path}: redaction master key is shorter than 32 bytes")
    return key


def load_policy_doc(path: Path | None) -> dict[str, Any]:
    """The operator's redaction file, or an empty document."""
    if path is None:
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"TRACEWARD_REDACTION_FILE={path}: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) - {"default", "tenants"}:
        raise ConfigError(f"TRACEWARD_REDACTION_FILE={path}: expected keys 'default' and/or 'tenants'")
    return doc


class TenantRedaction:
    """Implements the ingest pipeline's Redaction protocol with one Redactor per tenant."""

    def __init__(self, doc: Mapping[str, Any], master_key: bytes) -> None:
        self._master_key = master_key
        self._base = RedactionPolicy.from_config(doc["default"]) if doc.get("default") else RedactionPolicy.default()
        self._tenant_docs: Mapping[str, Any] = doc.get("tenants") or {}
        self._policies = {t: RedactionPolicy.from_config(d, base=self._base) for t, d in self._tenant_docs.items()}
        self._redactors: dict[str, Redactor] = {}
        self._lock = threading.Lock()

    def redactor(self, tenant_id: str) -> Redactor:
        """The tenant's Redactor (built once)."""
        found = self._redactors.get(tenant_id)
        if found is None:
            key = hmac.new(self._master_key, f"traceward/redaction/{tenant_id}".encode(), hashlib.sha256).digest()
            with self._lock:
                found = self._redactors.setdefault(
                    tenant_id, Redactor(self._policies.get(tenant_id, self._base), fingerprint_key=key))
        return found

    def spans(self, tenant_id: str, spans: Sequence[Span]) -> list[tuple[Span, RedactionMeta]]:
        """Redact a batch of spans for a tenant."""
        return self.redactor(tenant_id).redact_spans(spans)

    def payload(self, tenant_id: str, payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], RedactionMeta]:
        """Redact one JSON payload for a tenant."""
        return self.redactor(tenant_id).redact_payload(payload)
