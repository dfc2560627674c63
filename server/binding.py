"""Approved → executed, in the running server: the binding check for OTLP spans and REST steps.

When a tool execution arrives for a tool the project's active policy gates, the decision token it carries
is checked (``governance.binding.check_binding``: signature, tenant, tool, trace, expiry, args digest, single
use) exactly once per (trace, span); the outcome is stored with the step (``binding``) and anything but
``bound`` is a violation: an audit record and a ``policy`` step in the run. Ungated tools are ``ungated``.

What counts as an execution, and where its token and arguments are read from:

- OTLP span: ``gen_ai.tool.name`` / ``tool.name`` (or an ``execute_tool <name>`` span), the token in
  ``traceward.decision_token``, the arguments in ``gen_ai.tool.call.arguments`` (else ``input.value`` when
  it is a JSON object). A span in a new trace that links to the decided trace (a run resumed after a pause)
  is checked against the linked trace, and the decided run gets a ``policy`` step "executed in linked run"
  (``payload.linked_run_id``), so its timeline reads request → decision → approval → execution.
- REST step (``POST /v1/runs/{run_id}/steps``): ``type`` = ``tool`` with a ``tool_name``, the token in
  ``decision_token``, the arguments in ``payload.input`` (else ``payload.args``) when it is a JSON object
  (or JSON text of one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
import orjson

from governance import store
from governance.binding import DECISION_TOKEN_ATTRIBUTE, TOOL_ARGUMENTS_ATTRIBUTE, VIOLATIONS, check_binding
from governance.policy import Policy, is_gated
from governance.store import AuditEntry
from governance.tokens import SigningKeys
from otlp_receiver.errors import AppError
from otlp_receiver.model import Span as OtelSpan
from otlp_receiver.model import StepDraft, StepType
from otlp_receiver.store.index import RunIndex
from server.step_recorder import derived_span_id, server_step

logger = logging.getLogger(__name__)

RECEIVER_ACTOR = "traceward.receiver"
Binding = tuple[str | None, str | None]
"""(binding, decision token id) as stored with a step; (None, None) for steps that execute no tool."""


@dataclass(frozen=True, slots=True)
class Execution:
    """One tool execution, whatever it arrived as."""

    trace_id: str
    """The trace (run) it is recorded in."""
    span_id: str
    tool: str
    token: str | None
    recorded_args: Mapping[str, Any] | None
    started_ns: int
    decided_trace_id: str
    """The trace the token must be bound to: ``trace_id``, or a trace the span links to."""


class ActivePolicyLike(Protocol):
    """What the binder needs of a project's active policy."""

    @property
    def policy(self) -> Policy: ...

    @property
    def version(self) -> int: ...


class Binder:
    """Checks executions against decision tokens; records outcomes, audit records and violation steps."""

    def __init__(self, index: RunIndex, *, keys: Callable[[], SigningKeys],
                 active_policy: Callable[[str, str], ActivePolicyLike | None],
                 record_step: Callable[[str, str, StepDraft], None],
                 before_check: Callable[[], None] = lambda: None) -> None:
        self.index = index
        self._keys = keys
        self._active_policy = active_policy
        self._record_step = record_step
        self._before_check = before_check

    def bind_spans(self, tenant_id: str, project_id: str, spans: Sequence[OtelSpan]) -> list[Binding]:
        """``IngestPipeline``'s ``bind=`` hook: the bindings of an export's raw spans, in order.

        Pending decision steps are flushed once for the whole export, not once per span: every decision that
        governs one of these spans was made before the export arrived. (Per span, while decisions kept
        coming, nearly every span paid a WAL append and fsync: at 200 decisions/s, 4,700 acknowledged
        spans/s against 7,000 once per export, in one alternating pair of benchmark runs.)
        """
        self._before_check()
        return [self._check_execution(tenant_id, project_id, span_execution(s)) for s in spans]

    def bind_step(self, tenant_id: str, project_id: str, draft: StepDraft) -> Binding:
        """The same check for a REST step (before redaction)."""
        return self._bind(tenant_id, project_id, step_execution(draft))

    def _bind(self, tenant_id: str, project_id: str, execution: Execution | None) -> Binding:
        self._before_check()  # decisions and approvals reach the run before the executions they govern
        return self._check_execution(tenant_id, project_id, execution)

    def _check_execution(self, tenant_id: str, project_id: str, execution: Execution | None) -> Binding:
        if execution is None:
            return None, None
        try:
            return self._check(tenant_id, project_id, execution)
        except AppError:
            raise  # storage trouble: the export is retried
        except Exception:  # never lose spans to a governance bug; flag the step instead
            logger.exception("binding check failed for a %r execution; marking it invalid", execution.tool)
            return "invalid", None

    def _check(self, tenant_id: str, project_id: str, ex: Execution) -> Binding:
        active = self._active_policy(tenant_id, project_id)
        if active is None or not is_gated(active.policy, ex.tool):
            return "ungated", None

        def check(seen_jti: store.SeenJti) -> tuple[str, str | None]:
            binding, claims = check_binding(token=ex.token, keys=self._keys(), tenant=tenant_id, tool_name=ex.tool,
                                            trace_id=ex.decided_trace_id, recorded_args=ex.recorded_args,
                                            seen_jti=seen_jti, now_ns=ex.started_ns, gated=True)
            if claims is not None and claims.project != project_id:
                binding = "invalid"
            return binding, claims.jti if claims else None

        def audit(binding: str, jti: str | None) -> AuditEntry | None:
            if binding not in VIOLATIONS:
                return None
            return AuditEntry(RECEIVER_ACTOR, "binding.violation", f"{ex.trace_id}/{ex.span_id}", {
                "binding": binding, "tool": ex.tool, "trace_id": ex.trace_id, "span_id": ex.span_id,
                "jti": jti, "project_id": project_id, "policy_version": active.version})

        record = store.record_binding(self.index, tenant_id=tenant_id, trace_id=ex.trace_id, span_id=ex.span_id,
                                      check=check, audit=audit)
        if record.first and record.binding in VIOLATIONS:
            self._record_step(tenant_id, project_id, violation_step(ex, record))
        if record.first and ex.decided_trace_id != ex.trace_id:
            self._record_step(tenant_id, project_id, linked_execution_step(ex, record))
        return record.binding, record.jti


# ---------------------------------------------------------------- what an execution is


def span_execution(span: OtelSpan) -> Execution | None:
    """The tool execution an OTLP span records, or None."""
    tool = executed_tool(span)
    if tool is None:
        return None
    token = span.attributes.get(DECISION_TOKEN_ATTRIBUTE)
    token = token if isinstance(token, str) and token else None
    return Execution(trace_id=span.trace_id, span_id=span.span_id, tool=tool, token=token,
                     recorded_args=recorded_args(span.attributes), started_ns=span.start_ns,
                     decided_trace_id=execution_trace_id(span, token))


def step_execution(draft: StepDraft) -> Execution | None:
    """The tool execution a REST step records, or None (not a tool step, or no tool name)."""
    if draft.type is not StepType.TOOL or not draft.tool_name:
        return None
    payload = draft.payload or {}
    raw = payload.get("input", payload.get("args"))
    args = None if raw is None else (_json_object(raw) or {"(unparsable arguments)": str(raw)[:200]})
    return Execution(trace_id=draft.trace_id, span_id=draft.span_id, tool=draft.tool_name,
                     token=draft.decision_token or None, recorded_args=args, started_ns=draft.start_ns,
                     decided_trace_id=draft.trace_id)


def executed_tool(span: OtelSpan) -> str | None:
    """The tool a span executes: ``gen_ai.tool.name`` / ``tool.name``, or the name of an execute_tool span."""
    attrs = span.attributes
    for key in ("gen_ai.tool.name", "tool.name"):
        name = attrs.get(key)
        if isinstance(name, str) and name:
            return name
    if attrs.get("gen_ai.operation.name") == "execute_tool":
        _, _, name = span.name.partition(" ")
        return name.strip() or None
    return None


def recorded_args(attrs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The executed arguments, or None when the span did not record them.

    ``gen_ai.tool.call.arguments`` that is not a JSON object cannot match any token (args_mismatch);
    ``input.value`` counts only when it is a JSON object (OpenInference also puts plain text there).
    """
    raw = attrs.get(TOOL_ARGUMENTS_ATTRIBUTE)
    if raw is not None:
        parsed = _json_object(raw)
        return parsed if parsed is not None else {"(unparsable arguments)": str(raw)[:200]}
    raw = attrs.get("input.value")
    return _json_object(raw) if raw is not None else None


def _json_object(raw: Any) -> Mapping[str, Any] | None:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, str | bytes):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None
    return None


def execution_trace_id(span: OtelSpan, token: str | None) -> str:
    """The span's trace, or the token's when the span links to it (a run resumed in a new trace)."""
    if token is None or not span.links:
        return span.trace_id
    try:
        claimed = jwt.decode(token, options={"verify_signature": False}).get("trace_id")
    except jwt.PyJWTError:
        return span.trace_id
    return str(claimed) if any(link.trace_id == claimed for link in span.links) else span.trace_id


def violation_step(ex: Execution, record: store.BindingRecord) -> StepDraft:
    """The ``policy`` step that shows a violation in the run, under the execution it is about."""
    payload = {"binding": record.binding, "tool_name": ex.tool, "executed_span_id": ex.span_id,
               "jti": record.jti, "finding": "policy_violation"}
    return server_step(ex.trace_id, derived_span_id("binding", ex.trace_id, ex.span_id), ex.span_id,
                       StepType.POLICY, f"binding {record.binding}", ex.started_ns, payload, status="error",
                       tool=ex.tool, error=_violation_error(ex, record))


def linked_execution_step(ex: Execution, record: store.BindingRecord) -> StepDraft:
    """A run resumed in a new trace that links to the decided one: the execution also shows in the decided run,
    in time order after its request, decision and approval (the tool's own step stays in its trace's run)."""
    payload = {"binding": record.binding, "tool_name": ex.tool, "linked_run_id": ex.trace_id,
               "executed_span_id": ex.span_id, "jti": record.jti}
    ok = record.binding not in VIOLATIONS
    return server_step(ex.decided_trace_id, derived_span_id("linked", ex.trace_id, ex.span_id), None,
                       StepType.POLICY, f"executed in linked run ({record.binding})", ex.started_ns, payload,
                       status="ok" if ok else "error", tool=ex.tool, error=None if ok else _violation_error(ex, record))


def _violation_error(ex: Execution, record: store.BindingRecord) -> tuple[str, str]:
    return "binding_violation", f"tool {ex.tool!r} executed with binding {record.binding}"
