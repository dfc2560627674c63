"""Pure tests of otlp_receiver.decode: OTLP protobuf and OTLP/JSON → validated ``Span`` objects.

Covers the json_format base64 trap (OTLP/JSON ids are hex), per-span rejection with partial-success
counts, whole-request decode errors, attribute value normalisation (bytes, int64, truncation of deep
and huge values), a golden decode of an exhaustive request and a hypothesis round trip.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp_receiver.decode import (
    MAX_ATTR_DEPTH,
    MAX_REASONS,
    MAX_STRING_BYTES,
    DecodedBatch,
    decode_request,
    encode_partial_success_json,
    encode_partial_success_protobuf,
    parse_json,
    parse_protobuf,
)
from otlp_receiver.errors import DecodeError
from otlp_receiver.model import Span, SpanEvent, SpanLink

TRACE = "5b8efff798038103d269b633813fc60c"
SPAN = "eee19b7ec3c1b174"
PARENT = "eee19b7ec3c1b173"
MARKER = f"[truncated: nesting deeper than {MAX_ATTR_DEPTH}]"


# --- builders -------------------------------------------------------------------------------------------
def any_value(value: Any) -> common_pb2.AnyValue:
    """A Python value → AnyValue (str, bool, int, float, bytes, list, dict, None)."""
    if value is None:
        return common_pb2.AnyValue()
    if isinstance(value, bool):
        return common_pb2.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common_pb2.AnyValue(int_value=value)
    if isinstance(value, float):
        return common_pb2.AnyValue(double_value=value)
    if isinstance(value, str):
        return common_pb2.AnyValue(string_value=value)
    if isinstance(value, bytes):
        return common_pb2.AnyValue(bytes_value=value)
    if isinstance(value, list):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=key_values(value)))
    raise TypeError(type(value))


def key_values(attrs: dict[str, Any]) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


def pb_span(trace: bytes | str = TRACE, span: bytes | str = SPAN, parent: bytes | str = b"", *,
            name: str = "span", attributes: dict[str, Any] | None = None, **fields: Any) -> trace_pb2.Span:
    def raw(v: bytes | str) -> bytes:
        return bytes.fromhex(v) if isinstance(v, str) else v

    return trace_pb2.Span(trace_id=raw(trace), span_id=raw(span), parent_span_id=raw(parent), name=name,
                          attributes=key_values(attributes or {}), **fields)


def request_of(*spans: trace_pb2.Span, resource: dict[str, Any] | None = None) -> ts_pb2.ExportTraceServiceRequest:
    req = ts_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(key_values(resource or {}))
    rs.scope_spans.add().spans.extend(spans)
    return req


def decode_pb(req: ts_pb2.ExportTraceServiceRequest) -> DecodedBatch:
    """Serialise and decode, exactly as the receivers do."""
    return decode_request(parse_protobuf(req.SerializeToString()))


def json_doc(*spans: dict[str, Any], resource: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": resource or []}, "scopeSpans": [{"spans": list(spans)}]}]}


def decode_json(doc: dict[str, Any] | bytes | str) -> DecodedBatch:
    body = doc if isinstance(doc, bytes) else doc.encode() if isinstance(doc, str) else orjson.dumps(doc)
    return decode_request(parse_json(body))


def json_span(trace: str = TRACE, span: str = SPAN, **fields: Any) -> dict[str, Any]:
    return {"traceId": trace, "spanId": span, "name": "span", "startTimeUnixNano": "1", "endTimeUnixNano": "2",
            **fields}


def to_otlp_json(req: ts_pb2.ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON form of a request: protobuf JSON mapping with hex ids and integer enums."""
    doc = json_format.MessageToDict(req, use_integers_for_enums=True)

    def hexify(obj: dict[str, Any]) -> None:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in obj:
                obj[key] = base64.b64decode(obj[key]).hex()

    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                hexify(span)
                for link in span.get("links", []):
                    hexify(link)
    return doc


def nested_kvlist_bytes(depth: int) -> bytes:
    """A serialized AnyValue nested ``depth`` kvlists deep, encoded by hand.

    The protobuf runtime refuses to build (or parse) messages nested this deep, so an attacker's bytes
    have to be written directly.
    """
    value = _ld(1, b"leaf")  # AnyValue.string_value
    for i in range(depth):
        key_value = _ld(1, f"k{i}".encode()) + _ld(2, value)  # KeyValue{key, value}
        value = _ld(6, _ld(1, key_value))  # AnyValue.kvlist_value = KeyValueList{values}
    return value


def request_with_raw_attribute(span: trace_pb2.Span, key: str, value_bytes: bytes) -> bytes:
    """A serialized ExportTraceServiceRequest whose one span carries a hand-encoded attribute."""
    span_bytes = span.SerializeToString() + _ld(9, _ld(1, key.encode()) + _ld(2, value_bytes))
    return _ld(1, _ld(2, _ld(2, span_bytes)))  # request.resource_spans[0].scope_spans[0].spans[0]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def nesting_depth(value: Any) -> tuple[int, Any]:
    """How many single-entry dict/list levels wrap the innermost value, and that value."""
    depth = 0
    while isinstance(value, dict | list) and len(value) == 1:
        value = next(iter(value.values())) if isinstance(value, dict) else value[0]
        depth += 1
    return depth, value


# --- ids ------------------------------------------------------------------------------------------------
def test_json_hex_ids_decode_to_the_same_bytes_not_base64() -> None:
    doc = json_doc(json_span(parentSpanId=PARENT, links=[{"traceId": TRACE.upper(), "spanId": PARENT}]))
    [span] = decode_json(doc).spans
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, SPAN, PARENT)
    assert span.links == (SpanLink(TRACE, PARENT, {}),)  # hex is case-insensitive


def test_the_json_format_trap_is_real() -> None:
    """Plain protobuf JSON parsing reads hex ids as base64 and silently yields wrong bytes."""
    trap = ts_pb2.ExportTraceServiceRequest()
    json_format.ParseDict(json_doc(json_span()), trap)
    assert trap.resource_spans[0].scope_spans[0].spans[0].trace_id.hex() != TRACE
    assert decode_json(json_doc(json_span())).spans[0].trace_id == TRACE


def test_json_and_protobuf_ids_agree() -> None:
    req = request_of(pb_span(parent=PARENT))
    assert decode_json(to_otlp_json(req)).spans == decode_pb(req).spans


def test_empty_or_all_zero_parent_means_root() -> None:
    batch = decode_pb(request_of(pb_span(span="01" * 8), pb_span(span="02" * 8, parent=b"\x00" * 8)))
    assert [s.parent_span_id for s in batch.spans] == [None, None]
    assert decode_json(json_doc(json_span(parentSpanId=""))).spans[0].parent_span_id is None


@pytest.mark.parametrize(("trace", "span", "parent", "reason"), [
    (b"\x01" * 15, SPAN, b"", "invalid trace_id: expected 16 bytes, got 15"),
    (b"\x01" * 17, SPAN, b"", "invalid trace_id: expected 16 bytes, got 17"),
    (b"", SPAN, b"", "invalid trace_id: expected 16 bytes, got 0"),
    (b"\x00" * 16, SPAN, b"", "invalid trace_id: all zeros"),
    (TRACE, b"\x01" * 7, b"", "invalid span_id: expected 8 bytes, got 7"),
    (TRACE, b"", b"", "invalid span_id: expected 8 bytes, got 0"),
    (TRACE, b"\x00" * 8, b"", "invalid span_id: all zeros"),
    (TRACE, SPAN, b"\x01" * 4, "invalid parent_span_id: expected 8 bytes, got 4"),
])
def test_protobuf_bad_ids_reject_only_that_span(trace: Any, span: Any, parent: Any, reason: str) -> None:
    good = pb_span(span="0102030405060708", name="good")
    batch = decode_pb(request_of(good, pb_span(trace, span, parent, name="bad")))
    assert [s.name for s in batch.spans] == ["good"]
    assert batch.rejected == 1
    assert batch.reasons == [reason]
    assert batch.error_message == reason


@pytest.mark.parametrize(("field", "value", "reason_start"), [
    ("traceId", "zz" * 16, "invalid trace_id"),
    ("traceId", TRACE[:-1], "invalid trace_id"),  # odd length
    ("traceId", TRACE[:30], "invalid trace_id: expected 16 bytes, got 15"),
    ("traceId", TRACE + "00", "invalid trace_id: expected 16 bytes, got 17"),
    ("traceId", "0" * 32, "invalid trace_id: all zeros"),
    ("traceId", "", "invalid trace_id: expected 16 bytes, got 0"),
    ("spanId", "xyz", "invalid span_id"),
    ("spanId", "0" * 16, "invalid span_id: all zeros"),
    ("spanId", base64.b64encode(bytes.fromhex(SPAN)).decode(), "invalid span_id"),  # base64, not hex
    ("parentSpanId", "abcd", "invalid parent_span_id"),
])
def test_json_bad_ids_reject_only_that_span(field: str, value: str, reason_start: str) -> None:
    doc = json_doc(json_span(span="0102030405060708", name="good"), json_span(name="bad", **{field: value}))
    batch = decode_json(doc)
    assert [s.name for s in batch.spans] == ["good"]
    assert batch.rejected == 1
    assert batch.error_message.startswith(reason_start), batch.error_message


def test_rejection_reasons_are_distinct_and_capped() -> None:
    bad = [pb_span(trace=b"\x01" * n, name=f"bad{n}") for n in range(1, 9)]  # 8 distinct reasons
    bad += [pb_span(trace=b"\x01" * 3, name="same-reason-again")]
    batch = decode_pb(request_of(pb_span(name="good"), *bad))
    assert [s.name for s in batch.spans] == ["good"]
    assert batch.rejected == 9
    assert len(batch.reasons) == MAX_REASONS == len(set(batch.reasons))
    assert batch.error_message == "; ".join(batch.reasons)
    assert batch.reasons[0] == "invalid trace_id: expected 16 bytes, got 1"


def test_partial_success_encodings() -> None:
    assert encode_partial_success_json(0, "") == b"{}"
    assert orjson.loads(encode_partial_success_json(3, "why")) == {
        "partialSuccess": {"rejectedSpans": "3", "errorMessage": "why"}}
    response = ts_pb2.ExportTraceServiceResponse.FromString(encode_partial_success_protobuf(2, "bad ids"))
    assert (response.partial_success.rejected_spans, response.partial_success.error_message) == (2, "bad ids")
    assert not ts_pb2.ExportTraceServiceResponse.FromString(encode_partial_success_protobuf(0, "")) \
        .HasField("partial_success")


# --- whole-request errors -------------------------------------------------------------------------------
def _valid_bytes() -> bytes:
    return request_of(pb_span(name="x" * 40, attributes={"k": "v" * 40})).SerializeToString()


@pytest.mark.parametrize("body", [
    b"\xff\xff\xff\xff",
    b"\x0a\x80",  # length prefix cut short
    b"\x0a\x05abc",  # declared length beyond the end
    _valid_bytes()[:-10],  # truncated in the middle of a span
    b"\x0f",  # field 1 with the unused wire type 7
], ids=["garbage", "short-length", "overrun", "truncated", "bad-wire-type"])
def test_malformed_protobuf_raises_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError, match="malformed OTLP protobuf"):
        parse_protobuf(body)


def test_invalid_utf8_in_a_protobuf_string_raises_decode_error() -> None:
    body = request_of(pb_span(name="NAME")).SerializeToString().replace(b"NAME", b"N\xc3\x28E")
    with pytest.raises(DecodeError):
        parse_protobuf(body)
    attr = request_of(pb_span(attributes={"k": "VALUE"})).SerializeToString().replace(b"VALUE", b"VA\xffUE")
    with pytest.raises(DecodeError):
        parse_protobuf(attr)


@pytest.mark.parametrize("body", [
    b"{bad", b"", b"[]", b'"text"', b"null", b"\xff\xfe{}",
    b'{"resourceSpans": 5}',
    b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"%s","spanId":"%s","name":5}]}]}]}'
    % (TRACE.encode(), SPAN.encode()),
    b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"%s","spanId":"%s","startTimeUnixNano":"soon"}]}]}]}'
    % (TRACE.encode(), SPAN.encode()),
    b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":1234,"spanId":"%s"}]}]}]}' % SPAN.encode(),
], ids=["syntax", "empty", "array", "string", "null", "invalid-utf8", "wrong-shape", "name-not-string",
        "time-not-int", "id-not-string"])
def test_bad_json_raises_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_json(body)


def test_empty_requests_decode_to_nothing() -> None:
    for batch in (decode_json(b"{}"), decode_request(parse_protobuf(b""))):
        assert (batch.spans, batch.rejected, batch.error_message) == ([], 0, "")


# --- JSON value rules -------------------------------------------------------------------------------------
def test_json_int64_as_strings_or_numbers_and_unknown_fields_ignored() -> None:
    big = 2**63 - 1
    doc = json_doc(json_span(
        startTimeUnixNano=str(big - 5), endTimeUnixNano=big, kind=3, futureField={"x": 1}, flags=257,
        status={"code": 2, "message": "boom", "extra": True},
        attributes=[{"key": "s", "value": {"intValue": "9007199254740993"}},
                    {"key": "n", "value": {"intValue": 42}},
                    {"key": "neg", "value": {"intValue": "-7"}},
                    {"key": "d", "value": {"doubleValue": "1.5"}},
                    {"key": "b", "value": {"bytesValue": "AAH/"}},
                    {"key": "u", "value": {"stringValue": "x", "unknownValue": 1}},
                    {"key": "empty", "value": {}}]))
    doc["newTopLevel"] = [1, 2]
    doc["resourceSpans"][0]["scopeSpans"][0]["unknown"] = "ignored"
    [span] = decode_json(doc).spans
    assert (span.start_ns, span.end_ns, span.kind, span.flags) == (big - 5, big, 3, 257)
    assert (span.status_code, span.status_message) == (2, "boom")
    assert span.attributes == {"s": 9007199254740993, "n": 42, "neg": -7, "d": 1.5, "b": "AAH/", "u": "x",
                               "empty": None}


def test_bytes_values_become_base64_in_both_encodings() -> None:
    raw = b"\x00\x01\xff\xfe binary"
    req = request_of(pb_span(attributes={"b": raw, "list": [raw]}))
    expected = base64.b64encode(raw).decode()
    assert decode_pb(req).spans[0].attributes == {"b": expected, "list": [expected]}
    assert decode_json(to_otlp_json(req)).spans[0].attributes == {"b": expected, "list": [expected]}


# --- truncation ---------------------------------------------------------------------------------------------
def _nested(depth: int, leaf: Any = "leaf") -> Any:
    value = leaf
    for i in range(depth):
        value = {f"k{i}": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("depth", [1, MAX_ATTR_DEPTH - 1, MAX_ATTR_DEPTH, MAX_ATTR_DEPTH + 1, 30])
def test_nested_values_are_cut_at_max_attr_depth(depth: int) -> None:
    """Arrays and kvlists nested deeper than MAX_ATTR_DEPTH are replaced by a marker string."""
    [span] = decode_pb(request_of(pb_span(attributes={"deep": _nested(depth)}))).spans
    levels, inner = nesting_depth(span.attributes["deep"])
    if depth <= MAX_ATTR_DEPTH:
        assert (levels, inner) == (depth, "leaf")
        assert span.attributes["deep"] == _nested(depth)
    else:
        assert (levels, inner) == (MAX_ATTR_DEPTH, MARKER)


def test_nested_json_kvlists_are_cut_at_max_attr_depth() -> None:
    req = request_of(pb_span(attributes={"deep": _nested(18)}))
    [span] = decode_json(to_otlp_json(req)).spans
    assert nesting_depth(span.attributes["deep"]) == (MAX_ATTR_DEPTH, MARKER)


def test_kvlist_nested_200_deep_in_protobuf_is_a_clear_decode_error() -> None:
    """upb parses at most 100 message levels (≈ 32 kvlists): deeper binary payloads are refused, clearly."""
    body = request_with_raw_attribute(pb_span(), "deep", nested_kvlist_bytes(200))
    with pytest.raises(DecodeError, match="nested deeper"):
        parse_protobuf(body)


def test_kvlist_nested_200_deep_in_json_is_truncated_not_rejected() -> None:
    value = '{"stringValue":"leaf"}'
    for i in range(200):  # built as text: orjson refuses to serialise objects this deep
        value = '{"kvlistValue":{"values":[{"key":"k' + str(i) + '","value":' + value + "}]}}"
    span = orjson.dumps(json_span()).decode()[:-1] + ',"attributes":[{"key":"deep","value":' + value + "}]}"
    body = '{"resourceSpans":[{"scopeSpans":[{"spans":[' + span + "]}]}]}"
    [decoded] = decode_json(body).spans
    assert nesting_depth(decoded.attributes["deep"]) == (MAX_ATTR_DEPTH, MARKER)


def test_huge_strings_are_truncated_at_max_string_bytes() -> None:
    huge = "a" * (3 * 1024 * 1024)
    multibyte = "é" * MAX_STRING_BYTES  # 2 bytes each: twice the limit
    exact = "\U0001f600" * (MAX_STRING_BYTES // 4)  # exactly the limit in bytes: kept
    req = request_of(pb_span(name="n" * (MAX_STRING_BYTES + 1),
                             attributes={"huge": huge, "multi": multibyte, "exact": exact, "list": [huge]},
                             status=trace_pb2.Status(code=2, message="m" * (MAX_STRING_BYTES + 10))))
    for batch in (decode_pb(req), decode_json(to_otlp_json(req))):
        [span] = batch.spans
        cut = len(huge) - MAX_STRING_BYTES
        assert span.attributes["huge"] == "a" * MAX_STRING_BYTES + f"…[truncated {cut} bytes]"
        assert span.attributes["list"] == [span.attributes["huge"]]
        multi = span.attributes["multi"]
        assert multi == "é" * (MAX_STRING_BYTES // 2) + f"…[truncated {MAX_STRING_BYTES} bytes]"
        assert span.attributes["exact"] == exact
        assert span.name == "n" * MAX_STRING_BYTES + "…[truncated 1 bytes]"
        assert span.status_message == "m" * MAX_STRING_BYTES + "…[truncated 10 bytes]"


def test_odd_multibyte_cut_never_splits_a_character() -> None:
    text = "x" + "€" * MAX_STRING_BYTES  # 3-byte chars; the cut falls inside one
    [span] = decode_pb(request_of(pb_span(attributes={"t": text}))).spans
    kept = span.attributes["t"].split("…[truncated")[0]
    assert len(kept.encode()) <= MAX_STRING_BYTES
    assert kept == "x" + "€" * ((MAX_STRING_BYTES - 1) // 3)


def test_huge_bytes_values_are_capped() -> None:
    [span] = decode_pb(request_of(pb_span(attributes={"b": b"\x07" * (MAX_STRING_BYTES + 100)}))).spans
    assert base64.b64decode(span.attributes["b"]) == b"\x07" * MAX_STRING_BYTES


# --- golden -------------------------------------------------------------------------------------------------
def _golden_request() -> ts_pb2.ExportTraceServiceRequest:
    req = ts_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(key_values({"service.name": "checkout", "service.instance": 3}))
    rs.schema_url = "https://opentelemetry.io/schemas/1.27.0"
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "my.instrumentation", "1.2.3"
    ss.scope.attributes.extend(key_values({"scope.attr": True}))
    root = pb_span(
        span="0000000000000001", name="invoke_agent planner", kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=1_767_225_600_000_000_000, end_time_unix_nano=1_767_225_601_500_000_000,
        trace_state="vendor=x", flags=0x301, dropped_attributes_count=2,
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="agent failed"),
        attributes={"str": "text", "bool": False, "int": -(2**63), "double": -0.25, "bytes": b"\x00\xff",
                    "array": ["a", 1, 2.5, True, None, [b"\x01"]], "kvlist": {"inner": {"x": [1, 2]}, "y": "z"},
                    "unset": None, "unicode": "ünïcødé ✓"},
    )
    root.events.add(time_unix_nano=1_767_225_600_100_000_000, name="exception",
                    attributes=key_values({"exception.type": "ValueError", "exception.message": "boom"}))
    root.events.add(time_unix_nano=1_767_225_600_200_000_000, name="empty-event")
    root.links.add(trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
                   span_id=bytes.fromhex("b7ad6b7169203331"), trace_state="t=1",
                   attributes=key_values({"link.kind": "follows"}))
    root.links.add(trace_id=b"\x01" * 5, span_id=b"\x02" * 8)  # invalid link: dropped, span kept
    child = pb_span(span="0000000000000002", parent="0000000000000001", name="chat gpt-4o",
                    kind=trace_pb2.Span.SPAN_KIND_CLIENT, start_time_unix_nano=5, end_time_unix_nano=6,
                    status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK))
    ss.spans.extend([root, child, pb_span(span=b"\x00" * 8, name="zero-span-id")])
    other = req.resource_spans.add()  # a second resource with an anonymous scope
    other.scope_spans.add().spans.append(pb_span(trace="0af7651916cd43dd8448eb211c80319c", span="00000000000000ff",
                                                 name="other"))
    req.resource_spans.add()  # empty envelope: ignored
    return req


_GOLDEN_RESOURCE = {"service.name": "checkout", "service.instance": 3}
GOLDEN_SPANS = [
    Span(trace_id=TRACE, span_id="0000000000000001", parent_span_id=None, name="invoke_agent planner", kind=2,
         start_ns=1_767_225_600_000_000_000, end_ns=1_767_225_601_500_000_000, status_code=2,
         status_message="agent failed",
         attributes={"str": "text", "bool": False, "int": -(2**63), "double": -0.25, "bytes": "AP8=",
                     "array": ["a", 1, 2.5, True, None, ["AQ=="]], "kvlist": {"inner": {"x": [1, 2]}, "y": "z"},
                     "unset": None, "unicode": "ünïcødé ✓"},
         events=(SpanEvent("exception", 1_767_225_600_100_000_000,
                           {"exception.type": "ValueError", "exception.message": "boom"}),
                 SpanEvent("empty-event", 1_767_225_600_200_000_000, {})),
         links=(SpanLink("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", {"link.kind": "follows"}),),
         resource=_GOLDEN_RESOURCE, scope_name="my.instrumentation", scope_version="1.2.3", flags=0x301),
    Span(trace_id=TRACE, span_id="0000000000000002", parent_span_id="0000000000000001", name="chat gpt-4o",
         kind=3, start_ns=5, end_ns=6, status_code=1, status_message="", attributes={}, events=(), links=(),
         resource=_GOLDEN_RESOURCE, scope_name="my.instrumentation", scope_version="1.2.3", flags=0),
    Span(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="00000000000000ff", parent_span_id=None,
         name="other", kind=0, start_ns=0, end_ns=0, resource={}, scope_name="", scope_version=""),
]


def test_golden_exhaustive_request_protobuf() -> None:
    batch = decode_pb(_golden_request())
    assert batch.spans == GOLDEN_SPANS
    assert (batch.rejected, batch.error_message) == (1, "invalid span_id: all zeros")


def test_golden_exhaustive_request_json() -> None:
    batch = decode_json(to_otlp_json(_golden_request()))
    assert batch.spans == GOLDEN_SPANS
    assert (batch.rejected, batch.error_message) == (1, "invalid span_id: all zeros")


# --- round trip ---------------------------------------------------------------------------------------------
_trace_ids = st.binary(min_size=16, max_size=16).filter(lambda b: any(b))
_span_ids = st.binary(min_size=8, max_size=8).filter(lambda b: any(b))
_text = st.text(max_size=30)
_u64 = st.integers(min_value=0, max_value=2**64 - 1)
_scalars = st.one_of(st.none(), _text, st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                     st.floats(allow_nan=False), st.binary(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(_text, inner, max_size=4)), max_leaves=8)
_attrs = st.dictionaries(_text, _values, max_size=5)
_flat_attrs = st.dictionaries(_text, _scalars, max_size=2)


@st.composite
def spans_strategy(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "trace": draw(_trace_ids), "span": draw(_span_ids), "parent": draw(st.one_of(st.just(b""), _span_ids)),
        "name": draw(_text), "kind": draw(st.integers(0, 5)), "start": draw(_u64), "end": draw(_u64),
        "code": draw(st.integers(0, 2)), "message": draw(_text), "flags": draw(st.integers(0, 2**32 - 1)),
        "attrs": draw(_attrs),
        "events": draw(st.lists(st.tuples(_text, _u64, _flat_attrs), max_size=2)),
        "links": draw(st.lists(st.tuples(_trace_ids, _span_ids, _flat_attrs), max_size=2)),
        "resource": draw(_flat_attrs), "scope": (draw(_text), draw(_text)),
    }


def _expected_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_expected_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _expected_value(v) for k, v in value.items()}
    return value


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(spans_strategy(), min_size=1, max_size=3))
def test_round_trip_random_spans(specs: list[dict[str, Any]]) -> None:
    req = ts_pb2.ExportTraceServiceRequest()
    for spec in specs:
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(key_values(spec["resource"]))
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = spec["scope"]
        span = pb_span(spec["trace"], spec["span"], spec["parent"], name=spec["name"], attributes=spec["attrs"],
                       kind=spec["kind"], start_time_unix_nano=spec["start"], end_time_unix_nano=spec["end"],
                       flags=spec["flags"], status=trace_pb2.Status(code=spec["code"], message=spec["message"]))
        for name, time_ns, attrs in spec["events"]:
            span.events.add(name=name, time_unix_nano=time_ns, attributes=key_values(attrs))
        for trace, span_id, attrs in spec["links"]:
            span.links.add(trace_id=trace, span_id=span_id, attributes=key_values(attrs))
        ss.spans.append(span)

    expected = [Span(
        trace_id=s["trace"].hex(), span_id=s["span"].hex(), parent_span_id=s["parent"].hex() or None,
        name=s["name"], kind=s["kind"], start_ns=s["start"], end_ns=s["end"], status_code=s["code"],
        status_message=s["message"], attributes=_expected_value(s["attrs"]),
        events=tuple(SpanEvent(n, t, _expected_value(a)) for n, t, a in s["events"]),
        links=tuple(SpanLink(t.hex(), i.hex(), _expected_value(a)) for t, i, a in s["links"]),
        resource=_expected_value(s["resource"]), scope_name=s["scope"][0], scope_version=s["scope"][1],
        flags=s["flags"]) for s in specs]

    from_protobuf = decode_pb(req)
    assert from_protobuf.rejected == 0
    assert from_protobuf.spans == expected
    from_json = decode_json(to_otlp_json(req))
    assert from_json.rejected == 0
    assert from_json.spans == expected
