"""OTLP logs decoding (protobuf and OTLP/JSON) and GenAI content log records → artifact steps."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from otlp_receiver.decode import MAX_ATTR_DEPTH, encode_partial_success_json
from otlp_receiver.decode_logs import decode_logs_request, parse_logs_json, parse_logs_protobuf
from otlp_receiver.errors import DecodeError
from otlp_receiver.log_content import NO_TRACE_ID, NOT_CONTENT, content_step_id, content_steps
from otlp_receiver.model import LogRecord, SpanId, StepType, TraceId

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
T0 = 1_767_225_600_000_000_000


def kvlist(**values: Any) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[
        common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)) for k, v in values.items()]))


def pb_record(*, trace: bytes = bytes.fromhex(TRACE), span: bytes = bytes.fromhex(SPAN), event_name: str = "",
              body: common_pb2.AnyValue | None = None, attributes: dict[str, str] | None = None,
              time_ns: int = T0) -> logs_pb2.LogRecord:
    return logs_pb2.LogRecord(
        trace_id=trace, span_id=span, event_name=event_name, time_unix_nano=time_ns, observed_time_unix_nano=time_ns,
        severity_number=9, severity_text="INFO", body=body,
        attributes=[common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
                    for k, v in (attributes or {}).items()])


def pb_logs(*records: logs_pb2.LogRecord) -> ls_pb2.ExportLogsServiceRequest:
    request = ls_pb2.ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.append(
        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="agent")))
    resource_logs.scope_logs.add().log_records.extend(records)
    return request


def json_logs(*records: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent"}}]},
        "scopeLogs": [{"scope": {"name": "tests"}, "logRecords": list(records)}]}]})


def record(**overrides: Any) -> LogRecord:
    fields: dict[str, Any] = {"trace_id": TraceId(TRACE), "span_id": SpanId(SPAN), "event_name": "gen_ai.user.message",
                              "time_ns": T0, "observed_ns": T0, "body": {"content": "hi"}}
    return LogRecord(**{**fields, **overrides})


# --- decoding -----------------------------------------------------------------------------------------
def test_protobuf_record_decodes_ids_event_name_body_and_resource() -> None:
    body = kvlist(content="hi")
    batch = decode_logs_request(parse_logs_protobuf(
        pb_logs(pb_record(event_name="gen_ai.user.message", body=body)).SerializeToString()))
    (found,) = batch.records
    assert (found.trace_id, found.span_id, found.event_name) == (TRACE, SPAN, "gen_ai.user.message")
    assert (found.body, found.severity_text, found.resource) == ({"content": "hi"}, "INFO", {"service.name": "agent"})
    assert batch.rejected == 0


def test_event_name_falls_back_to_the_event_name_attribute() -> None:
    batch = decode_logs_request(pb_logs(pb_record(attributes={"event.name": "gen_ai.choice"})))
    assert batch.records[0].event_name == "gen_ai.choice"


@pytest.mark.parametrize("trace, span", [(b"", b""), (b"\x00" * 16, b"\x00" * 8)])
def test_missing_or_zero_ids_mean_uncorrelated_not_invalid(trace: bytes, span: bytes) -> None:
    batch = decode_logs_request(pb_logs(pb_record(trace=trace, span=span)))
    assert (batch.records[0].trace_id, batch.records[0].span_id, batch.rejected) == (None, None, 0)


@pytest.mark.parametrize("trace, span, reason", [
    (b"\x01" * 15, b"", "invalid trace_id: expected 16 bytes, got 15"),
    (bytes.fromhex(TRACE), b"\x01" * 9, "invalid span_id: expected 8 bytes, got 9"),
])  # fmt: skip
def test_wrong_length_ids_reject_the_record_and_keep_the_rest(trace: bytes, span: bytes, reason: str) -> None:
    batch = decode_logs_request(pb_logs(pb_record(trace=trace, span=span), pb_record()))
    assert (len(batch.records), batch.rejected, batch.error_message) == (1, 1, reason)


def test_json_ids_are_hex_and_bad_hex_rejects_only_that_record() -> None:
    good = {"traceId": TRACE.upper(), "spanId": SPAN, "eventName": "gen_ai.user.message",
            "timeUnixNano": str(T0), "body": {"kvlistValue": {"values": [
                {"key": "content", "value": {"stringValue": "hi"}}]}}}
    bad = {**good, "traceId": "zz" * 16}
    batch = decode_logs_request(parse_logs_json(json_logs(good, bad)))
    assert [(r.trace_id, r.span_id, r.body) for r in batch.records] == [(TRACE, SPAN, {"content": "hi"})]
    assert batch.rejected == 1 and "invalid trace_id" in batch.error_message


def test_json_body_nested_too_deep_is_cut_not_refused() -> None:
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(MAX_ATTR_DEPTH + 5):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    batch = decode_logs_request(parse_logs_json(json_logs({"traceId": TRACE, "body": value})))
    text = orjson.dumps(batch.records[0].body).decode()
    assert f"[truncated: nesting deeper than {MAX_ATTR_DEPTH}]" in text


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"resourceLogs": "x"}', b'{"resourceLogs": [{"scopeLogs": 3}]}'])
def test_malformed_json_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_logs_json(body)


def test_malformed_protobuf_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        parse_logs_protobuf(b"\x0a\xff\xff\xff\xff\x0f")


def test_json_base64_ids_are_not_silently_misread() -> None:
    b64 = base64.b64encode(bytes.fromhex(TRACE)).decode()  # 24 chars: not valid hex
    batch = decode_logs_request(parse_logs_json(json_logs({"traceId": b64})))
    assert batch.rejected == 1 and not batch.records


def test_logs_partial_success_json_names_log_records() -> None:
    body = orjson.loads(encode_partial_success_json(2, "why", rejected_field="rejectedLogRecords"))
    assert body == {"partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "why"}}


# --- content records → steps ------------------------------------------------------------------------------
def test_content_records_of_one_span_become_one_artifact_step_under_it() -> None:
    records = [record(event_name="gen_ai.system.message", body={"content": "be brief"}),
               record(time_ns=T0 + 1, attributes={"gen_ai.system": "openai"}),
               record(event_name="gen_ai.choice", time_ns=T0 + 2,
                      body={"index": 0, "finish_reason": "stop", "message": {"content": "hello"}})]
    content = content_steps(records)
    (draft,) = content.drafts
    assert (draft.type, draft.trace_id, draft.parent_span_id) == (StepType.ARTIFACT, TRACE, SPAN)
    assert (draft.start_ns, draft.end_ns, content.kept, content.not_kept) == (T0, T0 + 2, 3, {})
    assert draft.name == "gen_ai.system.message, gen_ai.user.message, gen_ai.choice"
    assert draft.payload["input"] == [{"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                                      {"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert draft.payload["output"] == [{"role": "assistant", "parts": [{"type": "text", "content": "hello"}],
                                        "finish_reason": "stop"}]
    assert draft.payload["events"][1] == {"name": "gen_ai.user.message", "time_ns": T0 + 1,
                                          "attributes": {"gen_ai.system": "openai"}}
    assert draft.tokens_in is None and draft.model_name is None  # never counted twice with the model step


def test_operation_details_record_content_moves_out_of_its_attributes() -> None:
    messages = [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    details = record(event_name="gen_ai.client.inference.operation.details", body=None,
                     attributes={"gen_ai.input.messages": messages, "gen_ai.request.model": "gpt-4o"})
    (draft,) = content_steps([details]).drafts
    assert draft.payload["input"] == messages
    assert draft.payload["events"][0]["attributes"] == {"gen_ai.request.model": "gpt-4o"}


def test_spans_and_traces_get_one_step_each() -> None:
    other_span, other_trace = SpanId("1" * 16), TraceId("2" * 32)
    content = content_steps([record(), record(span_id=other_span), record(trace_id=other_trace), record()])
    assert [(d.trace_id, d.parent_span_id) for d in content.drafts] == [
        (TRACE, SPAN), (TRACE, other_span), (other_trace, SPAN)]
    assert content.kept == 4


def test_records_not_stored_are_counted_by_reason() -> None:
    content = content_steps([record(event_name=""), record(event_name="app.log"), record(trace_id=None),
                             record(span_id=None)])
    assert content.not_kept == {NOT_CONTENT: 2, NO_TRACE_ID: 1}
    assert content.not_kept_total == 3
    assert [d.parent_span_id for d in content.drafts] == [None]  # correlated to the trace only


def test_step_id_is_stable_for_a_retry_and_independent_of_content() -> None:
    first = content_steps([record(), record(time_ns=T0 + 5)]).drafts[0].span_id
    assert content_steps([record(), record(time_ns=T0 + 5)]).drafts[0].span_id == first
    assert content_steps([record(body={"content": "other"}), record(time_ns=T0 + 5)]).drafts[0].span_id == first
    assert content_steps([record(time_ns=T0 + 5), record()]).drafts[0].span_id != first
    assert content_step_id(TRACE, SPAN, [record()]) != content_step_id(TRACE, None, [record()])
