"""Decision-token signing in the server: the Ed25519 key file, and issuing tokens with fresh ids.

The key file is a 0600 PEM under the data dir, created on first start and never overwritten. Imports
only ``governance.tokens`` and the standard library (no HTTP, no storage).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from governance.tokens import SigningKeys, issue_token

logger = logging.getLogger(__name__)


def load_signing_keys(path: Path) -> SigningKeys:
    """Load the PEM key file, or create it (mode 0600, never overwritten) with a fresh Ed25519 key."""
    try:
        return SigningKeys.from_pem(path.read_bytes())
    except FileNotFoundError:
        pass
    keys = SigningKeys.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return SigningKeys.from_pem(path.read_bytes())
    with os.fdopen(fd, "w") as handle:
        handle.write(keys.to_pem())
        handle.flush()
        os.fsync(handle.fileno())
    logger.info("created decision-token signing key %s in %s", keys.current_kid, path)
    return keys


class TokenIssuer:
    """Signs DecisionTokens with the current keys, each with a fresh ``jti`` and its expiry."""

    def __init__(self, keys: Callable[[], SigningKeys], *, ttl_s: int = 300) -> None:
        self.keys = keys
        self.ttl_s = ttl_s  # a token's lifetime unless the caller asks for another

    def issue(self, tenant: str, project: str, tool: str, digest: str, trace_id: str, span_id: str,
              now_ns: int, *, decision: str, approval_id: str | None, policy_version: int | None,
              break_glass: bool = False, ttl_s: int | None = None) -> tuple[str, str, int]:
        """Sign a token; returns (jti, token, expires_ns)."""
        jti = secrets.token_urlsafe(16)
        ttl = ttl_s or self.ttl_s
        token = issue_token(self.keys(), tenant=tenant, project=project, tool=tool, args_sha256=digest,
                            trace_id=trace_id, span_id=span_id, decision=decision, approval_id=approval_id,
                            policy_version=policy_version, break_glass=break_glass, ttl_s=ttl,
                            now=now_ns / 1e9, jti=jti)
        return jti, token, (now_ns // 10**9 + ttl) * 10**9
