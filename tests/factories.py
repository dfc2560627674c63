"""Plain builder functions for tests: domain objects with deterministic ids and times.

Every builder takes keyword overrides for any field. Ids and times come from module counters, so a
test run is reproducible; call ``reset_factories()`` in a test or fixture that needs fixed values.

    root = make_span(name="invoke_agent planner")
    chat = make_child(root, attributes={"gen_ai.operation.name": "chat"})
    step = make_step(type=StepType.MODEL, tokens_in=10)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from otlp_receiver.model import (
    Span,
    SpanEvent,
    SpanId,
    SpanKind,
    SpanLink,
    StatusCode,
    StepDraft,
    StepType,
    TraceId,
)

BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
STEP_NS = 1_000_000  # each new span starts 1 ms after the previous one
DURATION_NS = 500_000

_trace_counter: Iterator[int] = itertools.count(1)
_span_counter: Iterator[int] = itertools.count(1)
_time_counter: Iterator[int] = itertools.count(0)


def reset_factories() -> None:
    """Restart the id and time counters."""
    global _trace_counter, _span_counter, _time_counter
    _trace_counter, _span_counter, _time_counter = itertools.count(1), itertools.count(1), itertools.count(0)


def make_trace_id() -> TraceId:
    """The next trace id: 32 lower-case hex chars."""
    return TraceId(f"{next(_trace_counter):032x}")


def make_span_id() -> SpanId:
    """The next span id: 16 lower-case hex chars."""
    return SpanId(f"{next(_span_counter):016x}")


def next_start_ns() -> int:
    """The next start time: BASE_NS plus 1 ms per call."""
    return BASE_NS + next(_time_counter) * STEP_NS


def make_event(**overrides: Any) -> SpanEvent:
    """A span event (default: an ``exception`` event with type and message)."""
    fields: dict[str, Any] = {
        "name": "exception",
        "time_ns": BASE_NS,
        "attributes": {"exception.type": "ValueError", "exception.message": "boom"},
    }
    return SpanEvent(**{**fields, **overrides})


def make_link(**overrides: Any) -> SpanLink:
    """A span link to a fresh trace and span."""
    fields: dict[str, Any] = {"trace_id": make_trace_id(), "span_id": make_span_id(), "attributes": {}}
    return SpanLink(**{**fields, **overrides})


def make_span(**overrides: Any) -> Span:
    """A root span in a fresh trace, started 1 ms after the previous one, lasting 0.5 ms."""
    start_ns = overrides.pop("start_ns", None)
    start_ns = next_start_ns() if start_ns is None else start_ns
    fields: dict[str, Any] = {
        "trace_id": make_trace_id(),
        "span_id": make_span_id(),
        "parent_span_id": None,
        "name": "span",
        "kind": SpanKind.INTERNAL,
        "start_ns": start_ns,
        "end_ns": start_ns + DURATION_NS,
        "status_code": StatusCode.UNSET,
        "status_message": "",
        "attributes": {},
        "resource": {"service.name": "test-service"},
        "scope_name": "tests",
    }
    return Span(**{**fields, **overrides})


def make_child(parent: Span, **overrides: Any) -> Span:
    """A span in ``parent``'s trace, with ``parent`` as its parent and the same resource."""
    fields: dict[str, Any] = {
        "trace_id": parent.trace_id,
        "parent_span_id": parent.span_id,
        "resource": parent.resource,
    }
    return make_span(**{**fields, **overrides})


def make_step(**overrides: Any) -> StepDraft:
    """A step draft (default: a structural ``span`` step of a fresh trace)."""
    start_ns = overrides.pop("start_ns", None)
    start_ns = next_start_ns() if start_ns is None else start_ns
    fields: dict[str, Any] = {
        "trace_id": make_trace_id(),
        "span_id": make_span_id(),
        "parent_span_id": None,
        "type": StepType.SPAN,
        "name": "step",
        "start_ns": start_ns,
        "end_ns": start_ns + DURATION_NS,
    }
    return StepDraft(**{**fields, **overrides})


def make_child_step(parent: StepDraft, **overrides: Any) -> StepDraft:
    """A step in ``parent``'s trace, with ``parent`` as its parent."""
    return make_step(**{"trace_id": parent.trace_id, "parent_span_id": parent.span_id, **overrides})
