"""Domain spans and log records → OTLP protobuf requests: the inverse of ``decode`` and ``decode_logs``.

Used by forwarding (``forward``) to send what Traceward accepted, already redacted, to a downstream
endpoint with trace and span ids unchanged, and by tests to build requests from domain objects. One pure
function per message type, grouped by resource and scope like an SDK exporter does.

Bytes attribute values were decoded to base64 text at ingest and are encoded as that text.

Pure: imports ``opentelemetry.proto``, orjson and the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp_receiver.model import AttrValue, LogRecord, Span


def encode_request(spans: Sequence[Span]) -> trace_service_pb2.ExportTraceServiceRequest:
    """Domain spans → one OTLP request, grouped by resource and scope (ids, times, status, events, links kept)."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    groups: dict[tuple[bytes, str, str], trace_pb2.ScopeSpans] = {}
    resources: dict[bytes, trace_pb2.ResourceSpans] = {}
    for span in spans:
        resource_key = _resource_key(span.resource)
        key = (resource_key, span.scope_name, span.scope_version)
        scope_spans = groups.get(key)
        if scope_spans is None:
            resource_spans = resources.get(resource_key)
            if resource_spans is None:
                resource_spans = resources[resource_key] = request.resource_spans.add()
                encode_attributes(resource_spans.resource.attributes, span.resource)
            scope_spans = groups[key] = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = span.scope_name, span.scope_version
        _encode_span(scope_spans.spans.add(), span)
    return request


def encode_logs_request(records: Sequence[LogRecord]) -> logs_service_pb2.ExportLogsServiceRequest:
    """Domain log records → one OTLP logs request, grouped by resource and scope (ids, times, flags kept)."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    groups: dict[tuple[bytes, str], logs_pb2.ScopeLogs] = {}
    resources: dict[bytes, logs_pb2.ResourceLogs] = {}
    for record in records:
        resource_key = _resource_key(record.resource)
        scope_logs = groups.get((resource_key, record.scope_name))
        if scope_logs is None:
            resource_logs = resources.get(resource_key)
            if resource_logs is None:
                resource_logs = resources[resource_key] = request.resource_logs.add()
                encode_attributes(resource_logs.resource.attributes, record.resource)
            scope_logs = groups[(resource_key, record.scope_name)] = resource_logs.scope_logs.add()
            scope_logs.scope.name = record.scope_name
        _encode_log_record(scope_logs.log_records.add(), record)
    return request


def _resource_key(resource: Mapping[str, AttrValue]) -> bytes:
    """A hashable identity of a resource (protobuf messages cannot be dict keys)."""
    return orjson.dumps(resource, option=orjson.OPT_SORT_KEYS, default=str)


def _encode_span(out: trace_pb2.Span, span: Span) -> None:
    out.trace_id, out.span_id = bytes.fromhex(span.trace_id), bytes.fromhex(span.span_id)
    if span.parent_span_id:
        out.parent_span_id = bytes.fromhex(span.parent_span_id)
    out.name, out.kind, out.flags = span.name, span.kind, span.flags  # type: ignore[assignment]
    out.start_time_unix_nano, out.end_time_unix_nano = span.start_ns, span.end_ns
    out.status.code, out.status.message = span.status_code, span.status_message  # type: ignore[assignment]
    encode_attributes(out.attributes, span.attributes)
    for event in span.events:
        pb_event = out.events.add(name=event.name, time_unix_nano=event.time_ns)
        encode_attributes(pb_event.attributes, event.attributes)
    for link in span.links:
        pb_link = out.links.add(trace_id=bytes.fromhex(link.trace_id), span_id=bytes.fromhex(link.span_id))
        encode_attributes(pb_link.attributes, link.attributes)


def _encode_log_record(out: logs_pb2.LogRecord, record: LogRecord) -> None:
    if record.trace_id:
        out.trace_id = bytes.fromhex(record.trace_id)
    if record.span_id:
        out.span_id = bytes.fromhex(record.span_id)
    out.time_unix_nano, out.observed_time_unix_nano = record.time_ns, record.observed_ns
    out.severity_number = record.severity_number  # type: ignore[assignment]
    out.severity_text, out.event_name, out.flags = record.severity_text, record.event_name, record.flags
    if record.body is not None:
        encode_value(out.body, record.body)
    encode_attributes(out.attributes, record.attributes)


def encode_attributes(out: Any, attributes: Mapping[str, AttrValue]) -> None:
    """Append ``attributes`` to a repeated ``KeyValue`` field."""
    for key, value in attributes.items():
        kv = out.add(key=key)
        encode_value(kv.value, value)


def encode_value(out: common_pb2.AnyValue, value: AttrValue) -> None:
    """Set an ``AnyValue`` from a decoded attribute value (None leaves it empty)."""
    if value is None:
        return
    if isinstance(value, bool):  # before int: bool is an int subclass
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bytes):
        out.bytes_value = value
    elif isinstance(value, Mapping):
        out.kvlist_value.SetInParent()
        encode_attributes(out.kvlist_value.values, value)
    elif isinstance(value, list | tuple):
        out.array_value.SetInParent()
        for item in value:
            encode_value(out.array_value.values.add(), item)
    else:
        out.string_value = str(value)
