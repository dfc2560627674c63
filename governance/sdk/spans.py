"""The SDK's OpenTelemetry side: the current span's ids, the requesting span, the tool's span, resuming.

Imports only the OpenTelemetry API, the standard library and ``governance.sdk.result``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from governance.sdk.result import DecisionResult


def current_span_ids() -> tuple[str, str] | None:
    """The current OTel span's (trace_id, span_id) as lower-case hex, or None without a valid span."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


def resume_context(result: DecisionResult) -> otel_context.Context:
    """An OTel context whose parent is the requesting span, to resume a run in another process."""
    parent = trace.SpanContext(
        trace_id=int(result.trace_id, 16),
        span_id=int(result.span_id, 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


@contextlib.contextmanager
def _requesting_span(tracer: trace.Tracer, tool_name: str) -> Iterator[trace.SpanContext]:
    """The span decisions are asked under: the current one, or a new root when there is none."""
    current = trace.get_current_span().get_span_context()
    if current.is_valid:
        yield current
        return
    with tracer.start_as_current_span(f"govern {tool_name}") as span:
        yield span.get_span_context()


def _tool_span(
    tracer: trace.Tracer, tool_name: str, result: DecisionResult, requesting: trace.SpanContext
) -> Any:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool_name,
        "gen_ai.tool.call.arguments": json.dumps(result.args, separators=(",", ":"), ensure_ascii=False),
    }
    if result.token:
        attributes["traceward.decision_token"] = result.token
    if result.fail_open:
        attributes["traceward.fail_open"] = True
    links = []
    if result.approval_id:
        attributes["traceward.approval_id"] = result.approval_id
        links.append(trace.Link(requesting, {"traceward.approval_id": result.approval_id}))
    return tracer.start_as_current_span(
        f"execute_tool {tool_name}", kind=trace.SpanKind.INTERNAL, attributes=attributes, links=links
    )
