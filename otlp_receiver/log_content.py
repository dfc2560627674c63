"""GenAI content log records → ``artifact`` steps in the run of their trace.

Steps are append-only and hash-chained (``chain``), so content that arrives over OTLP logs never edits the
model step it belongs to, which may already be stored and chained. Instead the content records of one span
in one export become **one** ``artifact`` step in that trace's run, a child of the span (``parent_span_id``
= the records' span id), whose payload has the shape of a model step's: ``input``/``output`` messages in
the current GenAI schema (``content_events``), plus the records themselves under ``events`` (name, times,
severity, attributes minus the content already moved into the messages) and the ``resource``.

Its span id is derived from the records' identities (trace, span, event names, times, order), never from
their content, so an export retried with the same records maps onto the same step and the pipeline's
dedupe drops it; no hash of unredacted content is stored.

Records Traceward does not store are reported, not silently dropped: those that are not GenAI content
events, and content events without a trace id (there is no run to put them in). The receiver counts them
as rejected in the OTLP partial success, with a message saying why (``not_kept``).

Pure: imports the standard library and ``otlp_receiver``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from otlp_receiver.content_events import (
    CONTENT_EVENT_NAMES,
    EVENT_CONTENT,
    INPUT_MESSAGES,
    OUTPUT_MESSAGES,
    SYSTEM_INSTRUCTIONS,
    ContentEvent,
    content_messages,
    log_record_fields,
)
from otlp_receiver.json_value import to_json_value
from otlp_receiver.model import LogRecord, SpanId, SpanKind, StepDraft, StepType, TraceId

NOT_CONTENT: Final = "not a GenAI content event (Traceward stores only gen_ai.* content events of a trace)"
NO_TRACE_ID: Final = "a GenAI content event without a trace_id (no run to attach it to)"
MAX_NAME_CHARS: Final = 200
_CONSUMED: Final = frozenset({INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS, EVENT_CONTENT,
                              "gen_ai.prompt", "gen_ai.completion"})
"""Record attributes whose content moves into ``input``/``output`` (kept once, not twice)."""


@dataclass(frozen=True, slots=True)
class LogContent:
    """What a batch of log records becomes: content steps, and the records left out, by reason."""

    drafts: list[StepDraft] = field(default_factory=list)
    sources: list[tuple[LogRecord, ...]] = field(default_factory=list)
    """The records each draft was made from, in the same order (what forwarding sends on)."""
    kept: int = 0
    """Records carried by ``drafts``."""
    not_kept: dict[str, int] = field(default_factory=dict)
    """Reason (``NOT_CONTENT``, ``NO_TRACE_ID``) → how many records it applies to."""

    @property
    def not_kept_total(self) -> int:
        """Records left out, all reasons together."""
        return sum(self.not_kept.values())


def content_steps(records: Sequence[LogRecord]) -> LogContent:
    """Group the GenAI content records by (trace, span), in arrival order, into one artifact step each."""
    groups: dict[tuple[TraceId, SpanId | None], list[LogRecord]] = {}
    not_kept: dict[str, int] = {}
    for record in records:
        if record.event_name not in CONTENT_EVENT_NAMES or record.trace_id is None:
            reason = NOT_CONTENT if record.event_name not in CONTENT_EVENT_NAMES else NO_TRACE_ID
            not_kept[reason] = not_kept.get(reason, 0) + 1
            continue
        groups.setdefault((record.trace_id, record.span_id), []).append(record)
    drafts = [content_step(trace_id, span_id, group) for (trace_id, span_id), group in groups.items()]
    return LogContent(drafts=drafts, sources=[tuple(group) for group in groups.values()],
                      kept=sum(map(len, groups.values())), not_kept=not_kept)


def content_step(trace_id: TraceId, span_id: SpanId | None, records: Sequence[LogRecord]) -> StepDraft:
    """The artifact step of one span's content records (at least one)."""
    times = [_time_ns(record) for record in records]
    messages = content_messages(ContentEvent(r.event_name, log_record_fields(r.body, r.attributes)) for r in records)
    payload: dict[str, Any] = {}
    if messages.input is not None:
        payload["input"] = messages.input
    if messages.output is not None:
        payload["output"] = messages.output
    payload["events"] = [_event(record) for record in records]
    if records[0].resource:
        payload["resource"] = to_json_value(records[0].resource)
    return StepDraft(
        trace_id=trace_id, span_id=content_step_id(trace_id, span_id, records), parent_span_id=span_id,
        type=StepType.ARTIFACT, name=_name(records), start_ns=min(times), end_ns=max(times),
        kind=SpanKind.INTERNAL, payload=payload)


def content_step_id(trace_id: str, span_id: str | None, records: Sequence[LogRecord]) -> SpanId:
    """A 16-hex id from the records' identities only (names, times, order), never their content."""
    digest = hashlib.sha256(f"traceward/log-content/{trace_id}/{span_id or ''}".encode())
    for order, record in enumerate(records):
        digest.update(f"\0{order}\0{record.event_name}\0{record.time_ns}\0{record.observed_ns}".encode())
    return SpanId(digest.hexdigest()[:16])


def _time_ns(record: LogRecord) -> int:
    return record.time_ns or record.observed_ns


def _name(records: Sequence[LogRecord]) -> str:
    name = ", ".join(dict.fromkeys(record.event_name for record in records))
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def _event(record: LogRecord) -> dict[str, Any]:
    event: dict[str, Any] = {"name": record.event_name, "time_ns": _time_ns(record)}
    if record.severity_text or record.severity_number:
        event["severity"] = {"text": record.severity_text, "number": record.severity_number}
    if attributes := _attributes(record.attributes):
        event["attributes"] = attributes
    return event


def _attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): to_json_value(value) for key, value in attributes.items() if key not in _CONSUMED}
