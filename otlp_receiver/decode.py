"""OTLP trace payloads (protobuf or OTLP/JSON) → validated domain ``Span`` objects.

Pure: no I/O. With the gRPC servicer, the only importer of ``opentelemetry.proto``.

Validation follows the OTLP spec: a request that cannot be parsed at all raises
``DecodeError`` (→ INVALID_ARGUMENT / 400); individual bad spans (wrong id lengths,
all-zero ids) are *rejected* and counted, the rest of the batch is kept
(partial success, https://opentelemetry.io/docs/specs/otlp/#partial-success).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError as PBDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp_receiver.errors import DecodeError
from otlp_receiver.model import AttrValue, Span, SpanEvent, SpanId, SpanLink, TraceId
from otlp_receiver.priority import no_pause, paced

MAX_ATTR_DEPTH = 16
"""Nested kvlist/array values deeper than this are replaced by a marker string."""
MAX_STRING_BYTES = 256 * 1024
"""Attribute strings longer than this are truncated (with a marker saying how much was cut)."""
MAX_REASONS = 5
"""How many distinct rejection reasons the partial-success message names."""

M = TypeVar("M", bound=Message)
_ZERO_TRACE = b"\x00" * 16
_ZERO_SPAN = b"\x00" * 8
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


@dataclass(slots=True)
class Rejections:
    """Items of one export request refused one by one (partial success), with the first few reasons."""

    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str, count: int = 1) -> None:
        """Count ``count`` rejected items, remembering the first few distinct reasons."""
        self.rejected += count
        if reason not in self.reasons and len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    @property
    def error_message(self) -> str:
        """The partial-success message: the first reasons, joined."""
        return "; ".join(self.reasons)


@dataclass(slots=True)
class DecodedBatch(Rejections):
    """The outcome of decoding one trace export request: kept spans and rejection counts."""

    spans: list[Span] = field(default_factory=list)


def parse_protobuf(body: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    """Parse binary OTLP (``application/x-protobuf``) into a request message."""
    return parse_protobuf_into(trace_service_pb2.ExportTraceServiceRequest(), body)


def parse_protobuf_into(request: M, body: bytes) -> M:
    """Parse binary OTLP into ``request`` (an empty export request of any signal)."""
    try:
        request.ParseFromString(body)
    except (PBDecodeError, ValueError, RuntimeError) as exc:
        raise DecodeError("malformed OTLP protobuf payload: invalid wire format, invalid UTF-8 in a string "
                          f"field, or values nested deeper than protobuf's 100-level limit ({exc})") from exc
    return request


def parse_json(body: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    """Parse OTLP/JSON into a request message, with hex ids (not protobuf's base64).

    ``json_format.Parse`` would silently decode a hex ``traceId`` as base64 and produce
    wrong bytes, so ids are converted hex → base64 first; an invalid hex id becomes a
    deliberately wrong-length value so the span is rejected (not the whole request).
    """
    doc = load_json_object(body)
    _fix_json_ids(doc)
    return parse_json_into(trace_service_pb2.ExportTraceServiceRequest(), doc)


def load_json_object(body: bytes) -> dict[str, Any]:
    """The OTLP/JSON document of a request body (a JSON object), before protobuf parsing."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"malformed OTLP/JSON payload: {exc}") from exc
    if not isinstance(doc, dict):
        raise DecodeError("malformed OTLP/JSON payload: top level must be an object")
    return doc


def parse_json_into(request: M, doc: dict[str, Any]) -> M:
    """Parse an OTLP/JSON document whose ids are already base64 into ``request``."""
    try:
        json_format.ParseDict(doc, request, ignore_unknown_fields=True, max_recursion_depth=100)
    except RecursionError as exc:
        raise DecodeError("invalid OTLP/JSON payload: values nested too deeply") from exc
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise DecodeError(f"invalid OTLP/JSON payload: {_short(str(exc))}") from exc
    return request


def _fix_json_ids(doc: dict[str, Any]) -> None:
    for rs in dicts(doc.get("resourceSpans")):
        cap_attributes(rs.get("resource"))
        for ss in dicts(rs.get("scopeSpans")):
            for span in dicts(ss.get("spans")):
                hex_ids_to_b64(span)
                cap_attributes(span)
                for item in dicts(span.get("links")) + dicts(span.get("events")):
                    hex_ids_to_b64(item)
                    cap_attributes(item)


def cap_attributes(holder: object) -> None:
    """Cut attribute values nested deeper than MAX_ATTR_DEPTH before protobuf parsing (which would refuse
    the whole request), mirroring what :func:`decode_value` does for binary payloads."""
    if isinstance(holder, dict):
        for kv in dicts(holder.get("attributes")):
            if isinstance(kv.get("value"), dict):
                cap_value(kv["value"], 0)


def cap_value(value: dict[str, Any], depth: int) -> None:
    """Replace an OTLP/JSON AnyValue nested deeper than MAX_ATTR_DEPTH (from ``depth``) by a marker."""
    nested = value.get("kvlistValue") or value.get("arrayValue")
    if not isinstance(nested, dict):
        return
    if depth >= MAX_ATTR_DEPTH:
        value.clear()
        value["stringValue"] = f"[truncated: nesting deeper than {MAX_ATTR_DEPTH}]"
        return
    for item in dicts(nested.get("values")):
        inner = item.get("value") if "key" in item else item
        if isinstance(inner, dict):
            cap_value(inner, depth + 1)


def dicts(value: object) -> list[dict[str, Any]]:
    """The dicts among a JSON list (anything else: none)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def hex_ids_to_b64(obj: dict[str, Any]) -> None:
    """OTLP/JSON hex ids → the base64 protobuf's JSON mapping expects; a bad hex id → a wrong length."""
    for key in _ID_FIELDS:
        value = obj.get(key)
        if not isinstance(value, str) or not value:
            continue
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = b"\xff"  # wrong length on purpose: rejected per span as an invalid id
        obj[key] = base64.b64encode(raw).decode("ascii")


def decode_request(request: trace_service_pb2.ExportTraceServiceRequest, *,
                   pause: Callable[[], None] = no_pause) -> DecodedBatch:
    """Walk resource_spans → scope_spans → spans, decoding and validating each span.

    A resource's attributes are decoded once and shared (the same dict) by all of its spans. ``pause`` is
    called every ``CHECK_EVERY_SPANS`` spans (``otlp_receiver.priority``: urgent requests go first).
    """
    batch = DecodedBatch()
    spans = batch.spans
    for resource_spans in request.resource_spans:
        resource = decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name, scope_version = scope.name, scope.version
            for pb_span in paced(scope_spans.spans, pause):
                ids = pb_span.trace_id, pb_span.span_id, pb_span.parent_span_id
                reason = _invalid_reason(*ids)
                if reason:
                    batch.reject(reason)
                    continue
                spans.append(_decode_valid_span(pb_span, ids, resource, scope_name, scope_version))
    return batch


def _invalid_reason(trace_id: bytes, span_id: bytes, parent_span_id: bytes) -> str | None:
    if len(trace_id) != 16:
        return f"invalid trace_id: expected 16 bytes, got {len(trace_id)}"
    if trace_id == _ZERO_TRACE:
        return "invalid trace_id: all zeros"
    if len(span_id) != 8:
        return f"invalid span_id: expected 8 bytes, got {len(span_id)}"
    if span_id == _ZERO_SPAN:
        return "invalid span_id: all zeros"
    if parent_span_id and len(parent_span_id) != 8:
        return f"invalid parent_span_id: expected 8 bytes, got {len(parent_span_id)}"
    return None


def decode_span(
    span: trace_pb2.Span, resource: Mapping[str, AttrValue], scope_name: str = "", scope_version: str = ""
) -> Span:
    """Decode one (already validated) protobuf span."""
    return _decode_valid_span(span, (span.trace_id, span.span_id, span.parent_span_id), resource, scope_name,
                              scope_version)


def _decode_valid_span(span: trace_pb2.Span, ids: tuple[bytes, bytes, bytes], resource: Mapping[str, AttrValue],
                       scope_name: str, scope_version: str) -> Span:
    """:func:`decode_span`, given the ids already read (each protobuf field read makes a new object)."""
    trace_id, span_id, parent = ids
    status, events, links, name = span.status, span.events, span.links, span.name
    return Span(
        trace_id=TraceId(trace_id.hex()),
        span_id=SpanId(span_id.hex()),
        parent_span_id=SpanId(parent.hex()) if parent and parent != _ZERO_SPAN else None,
        name=name if len(name) <= _CLIP_FREE_CHARS else clip_text(name),
        kind=span.kind,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status_code=status.code,
        status_message=clip_text(status.message),
        attributes=decode_attributes(span.attributes),
        events=tuple(_decode_event(e) for e in events) if events else (),
        links=tuple(_decode_link(link) for link in links if len(link.trace_id) == 16) if links else (),
        resource=resource,
        scope_name=scope_name,
        scope_version=scope_version,
        flags=span.flags,
    )


def _decode_event(event: trace_pb2.Span.Event) -> SpanEvent:
    return SpanEvent(name=clip_text(event.name), time_ns=int(event.time_unix_nano),
                     attributes=decode_attributes(event.attributes))


def _decode_link(link: trace_pb2.Span.Link) -> SpanLink:
    return SpanLink(trace_id=TraceId(link.trace_id.hex()), span_id=SpanId(link.span_id.hex()),
                    attributes=decode_attributes(link.attributes))


def decode_attributes(attributes: Any, depth: int = 0) -> dict[str, AttrValue]:
    """Decode a repeated ``KeyValue`` into a plain dict (last key wins on duplicates).

    Hot path (a dozen attributes a span): strings, the common case, are stored without a further call.
    """
    out: dict[str, AttrValue] = {}
    for kv in attributes:
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":
            text = value.string_value
            out[kv.key] = text if len(text) <= _CLIP_FREE_CHARS else clip_text(text)
        elif which is None:
            out[kv.key] = None
        else:
            out[kv.key] = _decode_field(which, getattr(value, which), depth)
    return out


def decode_value(value: common_pb2.AnyValue, depth: int = 0) -> AttrValue:
    """Decode one ``AnyValue``. Bytes become base64 text so every value is JSON-compatible."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    return _decode_field(which, getattr(value, which), depth)


def _decode_field(which: str, value: Any, depth: int) -> AttrValue:
    """The AnyValue field ``which`` holding ``value``, decoded."""
    if which == "string_value":
        return clip_text(value)
    if which in ("int_value", "bool_value", "double_value"):
        return value
    if depth >= MAX_ATTR_DEPTH:
        return f"[truncated: nesting deeper than {MAX_ATTR_DEPTH}]"
    if which == "array_value":
        return [decode_value(v, depth + 1) for v in value.values]
    if which == "kvlist_value":
        return decode_attributes(value.values, depth + 1)
    if which == "bytes_value":
        return base64.b64encode(value[:MAX_STRING_BYTES]).decode("ascii")
    raise DecodeError(f"unsupported AnyValue field {which!r}")


_CLIP_FREE_CHARS = MAX_STRING_BYTES // 4
"""A string this short cannot exceed MAX_STRING_BYTES in UTF-8 (4 bytes a character at most)."""


def clip_text(text: str) -> str:
    """``text``, cut to MAX_STRING_BYTES of UTF-8 with a marker saying how much was cut."""
    if len(text) <= _CLIP_FREE_CHARS:  # fast path: cannot exceed the byte limit
        return text
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_STRING_BYTES:
        return text
    cut = encoded[:MAX_STRING_BYTES].decode("utf-8", errors="ignore")
    return f"{cut}…[truncated {len(encoded) - MAX_STRING_BYTES} bytes]"


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def encode_partial_success_json(rejected: int, message: str, *, rejected_field: str = "rejectedSpans") -> bytes:
    """The OTLP/JSON export response body (int64 as a decimal string); ``rejected_field`` names the signal's
    count (``rejectedLogRecords`` for logs)."""
    if not rejected and not message:
        return b"{}"
    return orjson.dumps({"partialSuccess": {rejected_field: str(rejected), "errorMessage": message}})


def encode_partial_success_protobuf(rejected: int, message: str) -> bytes:
    """The binary ExportTraceServiceResponse."""
    return make_response(rejected, message).SerializeToString()


def make_response(rejected: int, message: str) -> trace_service_pb2.ExportTraceServiceResponse:
    """An ExportTraceServiceResponse, with partial_success set only when there is something to say."""
    response = trace_service_pb2.ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return response
