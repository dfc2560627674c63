"""The SDK's errors: what agent code catches when a tool may not run.

Imports only the standard library (agent code may import this without httpx or OpenTelemetry set up).
"""

from __future__ import annotations


class GovernanceError(Exception):
    """Base of the SDK's errors; also raised for a rejected request (4xx) or a malformed answer.

    GovernanceError
    ├── ToolDenied             the policy or an approver said no
    ├── ApprovalTimeout        no approval before the deadline (or the approval expired)
    └── GovernanceUnavailable  Traceward could not be reached (fail closed)
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ToolDenied(GovernanceError):
    """The tool call was denied, by the policy or by a person."""

    def __init__(
        self, tool_name: str, reason_code: str, *, rule_id: str | None = None, approval_id: str | None = None
    ) -> None:
        who = f"approval {approval_id}" if approval_id else f"rule {rule_id or '(default)'}"
        super().__init__(f"Traceward denied tool {tool_name!r}: {reason_code} ({who})", code=reason_code)
        self.tool_name, self.reason_code, self.rule_id, self.approval_id = (
            tool_name,
            reason_code,
            rule_id,
            approval_id,
        )


class ApprovalTimeout(GovernanceError):
    """No decision on the approval before the client's deadline, or it expired server-side."""


class GovernanceUnavailable(GovernanceError):
    """Traceward was unreachable or failing; the call is denied unless the tool is fail-open."""
