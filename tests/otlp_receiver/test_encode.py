"""Encoding domain spans and log records back into OTLP requests: round trips through the decoders, grouping."""

from __future__ import annotations

from typing import Any

from otlp_receiver.decode import decode_request
from otlp_receiver.decode_logs import decode_logs_request
from otlp_receiver.encode import encode_logs_request, encode_request
from otlp_receiver.model import LogRecord, SpanId, TraceId
from tests.factories import make_child, make_event, make_link, make_span

TRACE = TraceId("4bf92f3577b34da6a3ce929d0e0e4736")
SPAN = SpanId("00f067aa0ba902b7")
T0 = 1_767_225_600_000_000_000


def record(**overrides: Any) -> LogRecord:
    fields: dict[str, Any] = {"trace_id": TRACE, "span_id": SPAN, "event_name": "gen_ai.user.message",
                              "time_ns": T0, "observed_ns": T0 + 5, "body": {"content": "hi"},
                              "resource": {"service.name": "agent"}, "scope_name": "genai"}
    return LogRecord(**{**fields, **overrides})


def test_encode_request_round_trips_through_decode() -> None:
    root = make_span(name="invoke_agent", kind=2, status_code=2, status_message="boom", flags=1,
                     attributes={"s": "text", "i": 42, "f": 0.5, "b": True, "none": None, "list": [1, "two", 3.0],
                                 "map": {"k": "v", "nested": {"deep": [True]}}},
                     events=(make_event(),), links=(make_link(attributes={"why": "retry"}),),
                     scope_version="1.2")
    child = make_child(root, name="tool", resource={"service.name": "other"}, scope_name="other-scope")
    sibling = make_child(root, name="model")
    decoded = decode_request(encode_request([root, child, sibling])).spans
    expected = {s.span_id: s for s in (root, child, sibling)}
    assert len(decoded) == 3
    for span in decoded:
        assert span == expected[span.span_id]


def test_encode_request_groups_by_resource_and_scope() -> None:
    root = make_span()
    spans = [root, make_child(root), make_child(root, scope_name="x"), make_child(root, resource={"service.name": "y"})]
    request = encode_request(spans)
    assert len(request.resource_spans) == 2
    assert sorted(len(rs.scope_spans) for rs in request.resource_spans) == [1, 2]


def test_encode_logs_request_round_trips_through_decode() -> None:
    records = [
        record(severity_number=17, severity_text="ERROR", flags=1,
               attributes={"gen_ai.system": "openai", "n": 3, "ok": True, "f": 0.5, "list": [1, "two"],
                           "map": {"k": {"deep": [None, False]}}}),
        record(event_name="gen_ai.choice", body={"index": 0, "message": {"role": "assistant", "content": "yo"}},
               time_ns=T0 + 10, observed_ns=0),
        record(trace_id=None, span_id=None, event_name="", body="plain text log", scope_name="app"),
        record(span_id=None, body=None, resource={"service.name": "other"}),
    ]
    decoded = decode_logs_request(encode_logs_request(records)).records
    assert sorted(decoded, key=repr) == sorted(records, key=repr)


def test_encode_logs_request_groups_by_resource_and_scope() -> None:
    request = encode_logs_request([record(), record(time_ns=T0 + 1), record(scope_name="x"),
                                   record(resource={"service.name": "y"})])
    assert len(request.resource_logs) == 2
    assert sorted(len(rl.scope_logs) for rl in request.resource_logs) == [1, 2]
