"""OTLP log payloads (protobuf or OTLP/JSON) → validated domain ``LogRecord`` objects.

The logs twin of ``decode``, sharing its parsing, size caps and partial-success rules
(https://opentelemetry.io/docs/specs/otlp/#partial-success): a request that cannot be parsed raises
``DecodeError``; a record with a malformed id (a trace id that is not 16 bytes, a span id that is not
8) is rejected and counted, the rest are kept. Ids are optional on log records: empty or all-zero ids
mean "not correlated" (``None``), not an error.

Pure: no I/O. Imports ``opentelemetry.proto`` (logs messages) like ``decode`` does for traces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from otlp_receiver.decode import (
    Rejections,
    cap_attributes,
    cap_value,
    clip_text,
    decode_attributes,
    decode_value,
    dicts,
    hex_ids_to_b64,
    load_json_object,
    parse_json_into,
    parse_protobuf_into,
)
from otlp_receiver.model import AttrValue, LogRecord, SpanId, TraceId

EVENT_NAME_ATTRIBUTE = "event.name"
"""Where the Events API put the event name before log records had an ``event_name`` field (proto 1.5)."""
_ZERO_TRACE = b"\x00" * 16
_ZERO_SPAN = b"\x00" * 8


@dataclass(slots=True)
class DecodedLogs(Rejections):
    """The outcome of decoding one logs export request: kept records and rejection counts."""

    records: list[LogRecord] = field(default_factory=list)


def parse_logs_protobuf(body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
    """Parse binary OTLP logs (``application/x-protobuf``)."""
    return parse_protobuf_into(logs_service_pb2.ExportLogsServiceRequest(), body)


def parse_logs_json(body: bytes) -> logs_service_pb2.ExportLogsServiceRequest:
    """Parse OTLP/JSON logs, hex ``traceId``/``spanId`` first turned into the base64 protobuf expects."""
    doc = load_json_object(body)
    for resource_logs in dicts(doc.get("resourceLogs")):
        cap_attributes(resource_logs.get("resource"))
        for scope_logs in dicts(resource_logs.get("scopeLogs")):
            cap_attributes(scope_logs.get("scope"))
            for record in dicts(scope_logs.get("logRecords")):
                hex_ids_to_b64(record)
                cap_attributes(record)
                if isinstance(record.get("body"), dict):
                    cap_value(record["body"], 0)
    return parse_json_into(logs_service_pb2.ExportLogsServiceRequest(), doc)


def decode_logs_request(request: logs_service_pb2.ExportLogsServiceRequest) -> DecodedLogs:
    """Walk resource_logs → scope_logs → log_records, decoding and validating each record."""
    batch = DecodedLogs()
    for resource_logs in request.resource_logs:
        resource = decode_attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope_name = scope_logs.scope.name
            for record in scope_logs.log_records:
                reason = _invalid_reason(record.trace_id, record.span_id)
                if reason:
                    batch.reject(reason)
                    continue
                batch.records.append(decode_log_record(record, resource, scope_name))
    return batch


def _invalid_reason(trace_id: bytes, span_id: bytes) -> str | None:
    if trace_id and len(trace_id) != 16:
        return f"invalid trace_id: expected 16 bytes, got {len(trace_id)}"
    if span_id and len(span_id) != 8:
        return f"invalid span_id: expected 8 bytes, got {len(span_id)}"
    return None


def decode_log_record(record: logs_pb2.LogRecord, resource: dict[str, AttrValue], scope_name: str = "") -> LogRecord:
    """Decode one (already validated) protobuf log record."""
    trace_id, span_id = record.trace_id, record.span_id
    attributes = decode_attributes(record.attributes)
    return LogRecord(
        trace_id=TraceId(trace_id.hex()) if trace_id and trace_id != _ZERO_TRACE else None,
        span_id=SpanId(span_id.hex()) if span_id and span_id != _ZERO_SPAN else None,
        event_name=clip_text(record.event_name) or _text(attributes.get(EVENT_NAME_ATTRIBUTE)),
        time_ns=record.time_unix_nano,
        observed_ns=record.observed_time_unix_nano,
        severity_number=record.severity_number,
        severity_text=clip_text(record.severity_text),
        body=decode_value(record.body) if record.HasField("body") else None,
        attributes=attributes,
        resource=resource,
        scope_name=clip_text(scope_name),
        flags=record.flags,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
