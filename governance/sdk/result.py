"""``DecisionResult``, and how the server's JSON answers about an approval become one or an SDK error.

Pure: imports only the standard library and ``governance.sdk.errors`` (no HTTP, no OpenTelemetry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from governance.sdk.errors import ApprovalTimeout, GovernanceError, ToolDenied


@dataclass(frozen=True)
class DecisionResult:
    """A decision that lets the tool run. ``args`` are the approved args to run it with."""

    decision: str
    reason_code: str
    args: Mapping[str, Any]
    trace_id: str
    span_id: str
    rule_id: str | None = None
    policy_version: int | None = None
    approval_id: str | None = None
    token: str | None = None
    fail_open: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


def _with(result: DecisionResult, **changes: Any) -> DecisionResult:
    return DecisionResult(**{**result.__dict__, **changes})


def _optional_str(answer: Mapping[str, Any], key: str) -> str | None:
    value = answer.get(key)
    return value if isinstance(value, str) and value else None


def _approval_outcome(
    tool_name: str, base: DecisionResult, approval_id: str, answer: Mapping[str, Any]
) -> DecisionResult | None:
    status = answer.get("status")
    if status == "pending":
        return None
    if status == "denied":
        raise ToolDenied(tool_name, str(answer.get("reason") or "approval_denied"), approval_id=approval_id)
    if status == "expired":
        raise ApprovalTimeout(f"approval {approval_id} for tool {tool_name!r} expired before anyone decided")
    token = _optional_str(answer, "token")
    if status != "approved" or token is None:
        raise GovernanceError(
            f"malformed approval {approval_id}: status {status!r}, token present: {bool(token)}"
        )
    args = answer.get("args")
    approved = dict(args) if isinstance(args, Mapping) else dict(base.args)
    return _with(base, decision="approved", args=approved, approval_id=approval_id, token=token, raw=answer)
