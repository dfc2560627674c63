"""Traceward's Python client for agent code: ask before running a tool, then prove it ran as decided.

Imports only the OpenTelemetry API, httpx and the standard library (never server/ or storage).

Usage::

    client = GovernanceClient("http://localhost:8080", api_key)

    @client.gated()                       # tool name defaults to the function name
    def send_email(to: str, body: str) -> None: ...

    with client.guard("refund", {"order": "A-1", "amount": 40}) as decided:
        refund(**decided.args)            # the approved args (edited if the approver changed them)

Both ask ``POST /v1/decisions`` with the current span's ids, wait for a human when the
answer is ``require_approval``, raise ``ToolDenied`` / ``ApprovalTimeout`` /
``GovernanceUnavailable`` (fail closed unless the tool is in ``fail_open_tools``), and
run the tool inside an ``execute_tool {name}`` span, a child of the requesting span, with:

    traceward.decision_token     the DecisionToken (absent only when failing open)
    traceward.approval_id        when a person approved (also on a span link to the requesting span)
    traceward.fail_open          true when the tool ran without a decision
    gen_ai.operation.name        "execute_tool"
    gen_ai.tool.name             the tool name
    gen_ai.tool.call.arguments   JSON of the approved args

Wire shapes (the server implements exactly these; all bodies are JSON)::

    POST /v1/decisions
      {"tool_name", "args": {...}, "trace_id": 32 lower hex, "span_id": 16 lower hex,
       "agent"?, "environment"?, "context"?: {summary, risk_score, blast_radius, evidence_links, rollback_plan}}
      → 200 {"decision": "allow"|"deny"|"require_approval", "reason_code", "rule_id", "policy_version",
             "approval_id"?, "token"?}            (token on allow; approval_id on require_approval)
    GET /v1/approvals/{approval_id}?wait=N        (long poll: answers when decided or after N seconds)
      → 200 {"approval_id", "status": "pending"|"approved"|"denied"|"expired", "token"?,
             "args": {...} (approved, edited if changed), "reason"?}
    errors → {"error": {"code", "message", "details", "retryable"}}

Transport errors, 5xx and 429 count as "unavailable"; other 4xx raise ``GovernanceError``.

The package, one responsibility a module (this module only re-exports them)::

    client   GovernanceClient: the HTTP calls, waiting on approvals, .guard and .gated
    result   DecisionResult, and reading approval answers into one
    spans    current_span_ids, resume_context, the requesting and execute_tool spans
    errors   GovernanceError and its subclasses
"""

from __future__ import annotations

from governance.sdk.client import DEFAULT_APPROVAL_TIMEOUT_S, DEFAULT_POLL_WAIT_S, GovernanceClient
from governance.sdk.errors import ApprovalTimeout, GovernanceError, GovernanceUnavailable, ToolDenied
from governance.sdk.result import DecisionResult
from governance.sdk.spans import current_span_ids, resume_context

__all__ = [
    "DEFAULT_APPROVAL_TIMEOUT_S",
    "DEFAULT_POLL_WAIT_S",
    "ApprovalTimeout",
    "DecisionResult",
    "GovernanceClient",
    "GovernanceError",
    "GovernanceUnavailable",
    "ToolDenied",
    "current_span_ids",
    "resume_context",
]
