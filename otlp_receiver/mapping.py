"""Pure span → step and spans → run-summary mapping (semconv.md §6).

``map_span`` turns one span into a ``StepDraft``: its type from the classification table
(``otlp_receiver.classify``), typed fields from the §6.2 precedence rows (``otlp_receiver.conventions``)
and its JSON payload (``otlp_receiver.payload``). ``summarize_runs`` says what a batch of spans tells
about each run. ``total_usage`` (``otlp_receiver.usage``) applies the §6.3 counting rules and is
re-exported here.

Pure: no I/O, no logging of attribute values; never raises on bad attribute values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from otlp_receiver.classify import explicit_step_type, match_rule
from otlp_receiver.conventions import (
    DEPLOYMENT_ENVIRONMENT,
    DEPLOYMENT_ENVIRONMENT_NAME,
    ERROR_TYPE,
    EXCEPTION_MESSAGE,
    EXCEPTION_TYPE,
    OPENINFERENCE_TAGS,
    RUN_NAME_KEYS,
    SERVICE_NAME,
    SERVICE_VERSION,
    SESSION_ID,
    SESSION_KEYS,
    TRACELOOP_ASSOCIATION_PREFIX,
    TRACEWARD_DECISION_TOKEN,
    USER_ID,
    USER_KEYS,
    Attributes,
    as_text,
    first_exception,
    first_of,
    has_error_signal,
    resolve_agent_name,
    resolve_model,
    resolve_provider,
    resolve_tool_call_id,
    resolve_tool_name,
    resolve_usage,
)
from otlp_receiver.json_value import parse_json_text
from otlp_receiver.key_profile import key_profile
from otlp_receiver.model import (
    RedactionMeta,
    RunId,
    RunStatus,
    RunSummary,
    Span,
    StatusCode,
    StepDraft,
    StepType,
)
from otlp_receiver.payload import build_payload
from otlp_receiver.usage import UsageTotals, total_usage

__all__ = ["UsageTotals", "map_span", "step_fields", "summarize_runs", "total_usage"]

_NO_REDACTION: Final = RedactionMeta()
_CANCELLATION: Final = re.compile(r"cancel|(?<!connection)abort|keyboardinterrupt", re.IGNORECASE)


# --- Steps ------------------------------------------------------------------------------------------------
def step_status(span: Span) -> str:
    """``ok`` | ``error`` | ``unset``; an UNSET span with ``error.type`` (or a failed task) is an error."""
    if span.status_code == StatusCode.ERROR:
        return "error"
    if span.status_code == StatusCode.OK:
        return "ok"
    return "error" if has_error_signal(span.attributes) else "unset"


def resolve_error(span: Span) -> tuple[str | None, str | None]:
    """(error type, error message) from ``error.type``, the status message and the first exception event."""
    exception = first_exception(span)
    error_type = as_text(span.attributes.get(ERROR_TYPE)) or as_text(exception.get(EXCEPTION_TYPE))
    message = as_text(span.status_message) or as_text(exception.get(EXCEPTION_MESSAGE))
    return error_type, message


def resolve_step_type(span: Span, status: str) -> StepType:
    """Explicit override, else the table; a failed structural span becomes an ``error`` step."""
    explicit = explicit_step_type(span)
    if explicit is not None:
        return explicit
    rule = match_rule(span)
    if rule is None or rule.step_type is StepType.SPAN:
        return StepType.ERROR if status == "error" else StepType.SPAN
    return rule.step_type


def map_span(span: Span) -> StepDraft:
    """Map one span to a step draft (type, typed fields and payload)."""
    return StepDraft(**step_fields(span))


def step_fields(span: Span) -> dict[str, Any]:
    """:func:`map_span`'s draft as a dict of its fields, in ``StepDraft`` field order.

    The ingest hot path builds WAL items from this dict directly instead of going through the frozen
    dataclass (26 fields: its construction and the read-back cost ~4 µs a span).
    """
    attrs = span.attributes
    profile = key_profile(attrs)
    status = step_status(span)
    step_type = resolve_step_type(span, status)
    usage = resolve_usage(attrs, profile)
    error_type, error_message = resolve_error(span) if status == "error" else (None, None)
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "type": step_type,
        "name": span.name,
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "status": status,
        "kind": span.kind,
        "tool_name": resolve_tool_name(span, profile),
        "tool_call_id": resolve_tool_call_id(attrs, profile),
        "model_name": resolve_model(attrs, profile),
        "provider": resolve_provider(attrs, profile),
        "agent_name": resolve_agent_name(attrs, profile),
        "tokens_in": usage.tokens_in,
        "tokens_out": usage.tokens_out,
        "tokens_total": usage.tokens_total,
        "tokens_cache_read": usage.cache_read,
        "tokens_cache_write": usage.cache_write,
        "tokens_reasoning": usage.reasoning,
        "cost_usd": usage.cost_usd,
        "error_type": error_type,
        "error_message": error_message,
        "decision_token": as_text(attrs.get(TRACEWARD_DECISION_TOKEN)),
        "payload": build_payload(span, step_type, profile),
        "redaction_meta": _NO_REDACTION,
    }


# --- Runs -------------------------------------------------------------------------------------------------
def is_cancellation(span: Span) -> bool:
    """``error.type`` or an exception type that names a cancellation (cancel, abort, KeyboardInterrupt)."""
    candidates = (span.attributes.get(ERROR_TYPE), first_exception(span).get(EXCEPTION_TYPE))
    return any(_CANCELLATION.search(text) for text in map(as_text, candidates) if text)


def root_status(root: Span) -> RunStatus | None:
    """The run's final status from its root span; None while the root has not ended."""
    if root.end_ns <= 0:
        return None
    if step_status(root) != "error":
        return RunStatus.SUCCEEDED
    return RunStatus.CANCELED if is_cancellation(root) else RunStatus.FAILED


def _search(spans: Sequence[Span], keys: Iterable[str]) -> str | None:
    """First value of ``keys`` on the spans in order (root first), then on their resources."""
    keys = tuple(keys)
    for attrs in [span.attributes for span in spans] + [span.resource for span in spans]:
        found = first_of(attrs, keys, as_text)
        if found is not None:
            return found
    return None


def run_name(root: Span | None) -> str | None:
    """§6.2 "run name": workflow / agent / entity name, then the root span name, then the service."""
    if root is None:
        return None
    found = first_of(root.attributes, RUN_NAME_KEYS, as_text)
    return found or as_text(root.name) or as_text(root.resource.get(SERVICE_NAME))


def _scalar_tag(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return as_text(str(value))
    return None


def _span_tags(attrs: Attributes) -> Iterable[tuple[str, str]]:
    """OpenInference ``tag.tags`` entries as ``tag.<value>``, traceloop association properties as ``<key>``."""
    tags = parse_json_text(attrs.get(OPENINFERENCE_TAGS))
    for tag in tags if isinstance(tags, list) else ():
        if text := _scalar_tag(tag):
            yield f"tag.{text}", "true"
    for key in key_profile(attrs).prefixed(TRACELOOP_ASSOCIATION_PREFIX):
        name, text = key[len(TRACELOOP_ASSOCIATION_PREFIX) :], _scalar_tag(attrs[key])
        if name and text:
            yield name, text


def run_tags(spans: Sequence[Span], session_id: str | None, user_id: str | None) -> dict[str, str]:
    """Run tags: resource identity, session/user, and span-level tags (root first, first value wins)."""
    environment = (DEPLOYMENT_ENVIRONMENT_NAME, DEPLOYMENT_ENVIRONMENT)
    known = {
        SERVICE_NAME: first_resource(spans, (SERVICE_NAME,)),
        SERVICE_VERSION: first_resource(spans, (SERVICE_VERSION,)),
        DEPLOYMENT_ENVIRONMENT: first_resource(spans, environment),
        SESSION_ID: session_id,
        USER_ID: user_id,
    }
    tags = {key: value for key, value in known.items() if value is not None}
    for span in spans:
        for key, value in _span_tags(span.attributes):
            tags.setdefault(key, value)
    return tags


def first_resource(spans: Sequence[Span], keys: Sequence[str]) -> str | None:
    """First value of ``keys`` among the spans' resource attributes (root first)."""
    for span in spans:
        found = first_of(span.resource, keys, as_text)
        if found is not None:
            return found
    return None


_PARENT_IS_REMOTE = 0x100 | 0x200  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def is_root(span: Span) -> bool:
    """A run's root: no parent, or a parent in another process that does not export to us (§6.4)."""
    return span.parent_span_id is None or (span.flags & _PARENT_IS_REMOTE) == _PARENT_IS_REMOTE


def _find_root(spans: Sequence[Span]) -> Span | None:
    return next((span for span in spans if is_root(span)), None)


def _first_agent(spans: Sequence[Span]) -> str | None:
    return next((name for span in spans if (name := resolve_agent_name(span.attributes))), None)


def summarize_run(spans: Sequence[Span]) -> RunSummary:
    """What one trace's spans (root first, then by start time) say about its run."""
    root = _find_root(spans)
    session_id, user_id = _search(spans, SESSION_KEYS), _search(spans, USER_KEYS)
    ends = [span.end_ns for span in spans if span.end_ns > 0]
    return RunSummary(
        run_id=RunId(spans[0].trace_id),
        root_span_id=root.span_id if root else None,
        root_start_ns=root.start_ns if root else None,
        root_end_ns=root.end_ns if root and root.end_ns > 0 else None,
        root_status=root_status(root) if root else None,
        name=run_name(root),
        service=first_resource(spans, (SERVICE_NAME,)),
        agent=_first_agent(spans),
        session_id=session_id,
        user_id=user_id,
        tags=run_tags(spans, session_id, user_id),
        first_start_ns=min(span.start_ns for span in spans),
        last_end_ns=max(ends) if ends else None,
    )


def _root_first(span: Span) -> tuple[bool, int, str]:
    return not is_root(span), span.start_ns, span.span_id


def summarize_runs(spans: Sequence[Span]) -> dict[str, RunSummary]:
    """Run summaries keyed by trace id. The root is the span without a parent (§6.4)."""
    by_trace: dict[str, list[Span]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    return {trace_id: summarize_run(sorted(group, key=_root_first)) for trace_id, group in by_trace.items()}
