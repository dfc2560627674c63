"""Binding approved → executed: does an executed tool span carry the token that allowed it?

The receiver calls ``check_binding`` for every tool step, with the token read from the
span attribute ``traceward.decision_token`` and the arguments from
``gen_ai.tool.call.arguments`` (before redaction: the hash is over what actually ran).
Outcomes, checked in this order:

    ungated        the active policy does not gate the tool (not a violation)
    missing        gated, but no token on the span
    invalid        forged / malformed / unknown kid, or for another tenant, tool or trace
    expired        genuine, but the execution started after its exp (+ leeway)
    args_mismatch  args_sha256 differs from the recorded arguments (when they were recorded)
    replayed       the token's jti was already used by another execution
    bound          all of the above passed

Anything but ``bound`` and ``ungated`` is a policy violation for the caller to record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from governance.tokens import (
    DEFAULT_LEEWAY_S,
    SigningKeys,
    TokenClaims,
    TokenError,
    TokenExpired,
    args_sha256,
    check_times,
    verify_signature,
)
from otlp_receiver.errors import InvalidInputError

logger = logging.getLogger(__name__)

BINDING = Literal["bound", "missing", "invalid", "expired", "args_mismatch", "replayed", "ungated"]
VIOLATIONS: frozenset[str] = frozenset({"missing", "invalid", "expired", "args_mismatch", "replayed"})

DECISION_TOKEN_ATTRIBUTE = "traceward.decision_token"
TOOL_ARGUMENTS_ATTRIBUTE = "gen_ai.tool.call.arguments"


def check_binding(
    *,
    token: str | None,
    keys: SigningKeys | Mapping[str, Any],
    tenant: str,
    tool_name: str,
    trace_id: str,
    recorded_args: Mapping[str, Any] | None,
    seen_jti: Callable[[str], bool],
    now_ns: int,
    gated: bool,
    leeway_s: float = DEFAULT_LEEWAY_S,
) -> tuple[BINDING, TokenClaims | None]:
    """Classify one tool execution.

    Args:
        token: the span's ``traceward.decision_token`` attribute, if any.
        keys: the signing keys (or a JWK Set) of the tenant's deployment.
        tenant, tool_name, trace_id: what the executed span says.
        recorded_args: the executed arguments, or None when they were not recorded.
        seen_jti: called exactly once for each token that is genuine and for this
            tenant, tool and trace; it must atomically record the jti and return
            True when it had already been used (by another execution).
        now_ns: the execution time (the span's start), nanoseconds since the epoch.
        gated: ``governance.policy.is_gated`` for the active policy and this tool.

    Returns:
        The outcome and, when the token was genuine and for this execution, its claims.
    """
    if not gated:
        return "ungated", None
    if not token:
        return "missing", None
    try:
        claims = verify_signature(keys, token)
    except TokenError:
        return "invalid", None
    if (claims.tenant, claims.tool, claims.trace_id) != (tenant, tool_name, trace_id):
        logger.info("decision token %s does not match the executed tenant/tool/trace", claims.jti)
        return "invalid", None
    replayed = seen_jti(claims.jti)
    return _outcome(claims, recorded_args, replayed, now_ns, leeway_s), claims


def _outcome(
    claims: TokenClaims, recorded_args: Mapping[str, Any] | None, replayed: bool, now_ns: int, leeway_s: float
) -> BINDING:
    try:
        check_times(claims, now_ns / 1_000_000_000, leeway_s=leeway_s)
    except TokenExpired:
        return "expired"
    except TokenError:
        return "invalid"
    if recorded_args is not None and _digest(recorded_args) != claims.args_sha256:
        return "args_mismatch"
    return "replayed" if replayed else "bound"


def _digest(args: Mapping[str, Any]) -> str | None:
    """The args hash, or None when the recorded args cannot be canonicalised (so cannot match)."""
    try:
        return args_sha256(args)
    except InvalidInputError:
        return None
